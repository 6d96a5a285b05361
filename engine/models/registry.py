"""Which model a user means: a local diffusers Wan folder, or ``tiny`` (random weights, for smoke tests).

The bundled demo model joins here once it ships in ``resources/``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from calibstudio.engine.models.base import ModelLoadError, VideoModelAdapter
from calibstudio.engine.models.wan import WanAdapter


@dataclass(frozen=True)
class LoadedModel:
    """A pipeline, its adapter, and the clip size and step count it is meant for."""

    pipe: Any
    adapter: VideoModelAdapter
    defaults: dict[str, int | float]


WAN_DEFAULTS = {"height": 480, "width": 832, "frames": 81, "steps": 50, "guidance_scale": 5.0}
TINY_DEFAULTS = {"height": 64, "width": 128, "frames": 9, "steps": 4, "guidance_scale": 1.0}


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def load_model(spec: str, device: str | None = None) -> LoadedModel:
    """Load ``spec`` (a folder, or ``tiny``) onto ``device`` (default: CUDA if present) in its usual dtype."""
    device = device or default_device()
    if spec == "tiny":
        from calibstudio.engine.models.tiny import tiny_wan_pipeline

        return LoadedModel(tiny_wan_pipeline().to(device), WanAdapter(), TINY_DEFAULTS)
    if not Path(spec).exists():
        raise ModelLoadError(f"model {spec!r} is neither a local diffusers folder nor 'tiny'; "
                             f"pass the folder of a downloaded Wan2.1-T2V-*-Diffusers model")
    from calibstudio.engine.models.wan import load_wan

    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    return LoadedModel(load_wan(spec, dtype=dtype, device=device), WanAdapter(), WAN_DEFAULTS)
