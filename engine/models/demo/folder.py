"""What a demo model folder holds, and how to recognise one without importing torch (the studio checks too)."""

from __future__ import annotations

from pathlib import Path

NAME = "calibstudio-demo"
WEIGHTS, CONFIG, PROFILE = "model.safetensors", "config.json", "profile.safetensors"


def is_demo_folder(path: str | Path) -> bool:
    """A folder the training script exported (``config.json`` beside the weights), not a diffusers pipeline.

    Only the layout is checked; loading it gives the clear error for damaged files.
    """
    path = Path(path)
    return (path / CONFIG).is_file() and not (path / "model_index.json").exists()
