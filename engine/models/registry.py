"""Which model a user means: ``demo`` (the bundled model, the default), a local diffusers Wan folder,
a demo model folder (``demo.train`` exports one), or ``tiny`` (random weights, for smoke tests)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from calibstudio.engine.cpu_allocator import keep_freed_memory
from calibstudio.engine.models.base import ModelLoadError, VideoModelAdapter
from calibstudio.engine.models.demo.folder import PROFILE, is_demo_folder
from calibstudio.engine.models.wan import WanAdapter


@dataclass(frozen=True)
class LoadedModel:
    """A pipeline, its adapter, the clip size and step count it is meant for, and its calibration prompts."""

    pipe: Any
    adapter: VideoModelAdapter
    defaults: dict[str, int | float]
    prompts: str = "calibration_prompts.txt"  # in calibstudio.resources
    profile: Path | None = None  # a calibration profile shipped with the model

    @property
    def available_profile(self) -> Path | None:
        """The shipped profile if the model has one and it is on disk (a damaged install may lack it)."""
        return self.profile if self.profile is not None and self.profile.is_file() else None

    def threshold(self, given: float | None) -> float:
        """``given``, else the model's recommended threshold (0.9 for the demo model, 0.999 for Wan)."""
        return float(self.defaults["threshold"]) if given is None else given

    def error_bound(self, given: float | None) -> float | None:
        """``given`` (0: no error pass), else the model's calibration error bound (None: mass only)."""
        value = self.defaults.get("error_bound") if given is None else given
        return float(value) if value else None

    def dense_steps(self, given: int | None, steps: int | None = None) -> int:
        """``given``, else the model's dense first steps (at most ``steps``, a clip's step count): a model
        trained to attend locally only below a noise level (``demo.train --local-below``) runs the steps
        above it dense; 0 for the others."""
        if given is not None:
            return given
        default = int(self.defaults.get("dense_steps", 0))
        return default if steps is None else min(default, steps)

    def shipped_profile(self, given: str | None) -> str | Path:
        """``given``, else the model's shipped profile; a clear error when there is neither."""
        if given:
            return given
        if self.available_profile is None:
            raise ValueError("this model ships no calibration profile: give one (--profile, or a 'profile' path "
                             "in the engine request), or make one with "
                             "`calibstudio calibrate --out PROFILE`")
        return self.profile


# Each model's clip size, steps, guidance, recommended retained-mass threshold and dense first steps (what
# jobs use when a request or the command line gives none).
WAN_DEFAULTS = {"height": 480, "width": 832, "frames": 81, "steps": 50, "guidance_scale": 5.0, "threshold": 0.999,
                "dense_steps": 0}
TINY_DEFAULTS = {"height": 64, "width": 128, "frames": 9, "steps": 4, "guidance_scale": 1.0, "threshold": 0.999,
                 "dense_steps": 0}


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


DEFAULT_MODEL = "demo"


def load_model(spec: str = DEFAULT_MODEL, device: str | None = None) -> LoadedModel:
    """Load ``spec`` (``demo``, a Wan or demo model folder, or ``tiny``) onto ``device`` (default: CUDA if present)."""
    device = device or default_device()
    if torch.device(device).type == "cpu":
        keep_freed_memory()
    if spec == "tiny":
        from calibstudio.engine.models.tiny import tiny_wan_pipeline

        return LoadedModel(tiny_wan_pipeline().to(device), WanAdapter(), TINY_DEFAULTS)
    if spec == "demo" or is_demo_folder(spec):  # the bundled demo model, or one exported by its training
        from calibstudio.engine.models.demo.model import DemoAdapter, default_folder, load_demo

        folder = default_folder() if spec == "demo" else Path(spec)
        pipe = load_demo(folder, device=device)
        return LoadedModel(pipe, DemoAdapter(), pipe.defaults, "demo_prompts.txt", folder / PROFILE)
    if not Path(spec).exists():
        raise ModelLoadError(f"model {spec!r} is neither 'demo', 'tiny' nor a local model folder; "
                             f"pass the folder of a downloaded Wan2.1-T2V-*-Diffusers model")
    from calibstudio.engine.models.wan import load_wan

    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    return LoadedModel(load_wan(spec, dtype=dtype, device=device), WanAdapter(), WAN_DEFAULTS)
