"""What a demo model folder holds, and how to recognise one without importing torch (the studio checks too)."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

NAME = "calibstudio-demo"
WEIGHTS, CONFIG, PROFILE = "model.safetensors", "config.json", "profile.safetensors"


def is_demo_folder(path: str | Path) -> bool:
    """A folder the training script exported (``config.json`` beside the weights), not a diffusers pipeline.

    Only the layout is checked; loading it gives the clear error for damaged files.
    """
    path = Path(path)
    return (path / CONFIG).is_file() and not (path / "model_index.json").exists()


def default_folder() -> Path:
    """Where the shipped weights live (inside the installed package)."""
    return Path(str(resources.files("calibstudio.resources").joinpath("demo_model")))


def saved_defaults(folder: str | Path) -> dict[str, Any]:
    """The inference defaults (size, frames, steps, dense steps, ...) a demo model folder's config records,
    read without torch so the studio's form shows them before the engine has loaded the model; ``{}`` when
    the config cannot be read (loading the model then names the problem)."""
    try:
        defaults = json.loads((Path(folder) / CONFIG).read_text()).get("defaults")
    except (OSError, ValueError, AttributeError):
        return {}
    return defaults if isinstance(defaults, dict) else {}
