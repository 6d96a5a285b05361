"""What a job asks the engine for, and the checks that catch an impossible request before it is sent.

Pure Python (no Qt), so the rules are tested on their own. The engine checks again and answers a
bad request with an error; checking here first gives the user the message at once, next to the
field, instead of after a model load.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from calibstudio.engine.models.demo.folder import is_demo_folder

KINDS = ("calibrate", "generate", "compare")
BUNDLED_MODELS = ("demo", "tiny")  # names the engine's model registry knows besides local folders
DEFAULT_MODEL = "demo"  # the bundled model (engine.models.registry.DEFAULT_MODEL); no torch import here
MAX_STEPS = 1000
MAX_SIDE = 4096
MAX_FRAMES = 1025
BLOCK_SIZES = (16, 32, 64, 128)


@dataclass(frozen=True)
class SizeRule:
    """How a model family's clip size must divide: its latent/patch grid (from its adapter's token_grid)."""

    family: str
    side_multiple: int
    frame_step: int  # frames must be frame_step * k + frame_offset
    frame_offset: int

    def problems(self, height: int, width: int, frames: int) -> list[str]:
        out = []
        for name, value in (("height", height), ("width", width)):
            if value % self.side_multiple:
                out.append(f"{name} {value} is not a multiple of {self.side_multiple} "
                           f"({self.family} needs sizes in multiples of {self.side_multiple})")
        if frames < self.frame_step + self.frame_offset or (frames - self.frame_offset) % self.frame_step:
            example = self.frame_step * 4 + self.frame_offset
            step, offset = self.frame_step, self.frame_offset
            form = f"{step}k+{offset}" if offset else f"a multiple of {step}"
            out.append(f"{frames} frames is impossible for {self.family}: frames must be {form} (e.g. {example})")
        return out


# Wan 2.1: VAE 8x spatially and 4x in time, patches of 1x2x2 -> sizes in 16s, frames 4k+1.
# Demo model: pixel space, patches of 2x4x4 -> sizes in 4s, an even number of frames.
WAN_RULE = SizeRule("Wan", side_multiple=16, frame_step=4, frame_offset=1)
DEMO_RULE = SizeRule("the demo model", side_multiple=4, frame_step=2, frame_offset=0)


def size_rule(model: str) -> SizeRule:
    """The size rule of ``model``: the demo model's own (bundled or a trained folder), else Wan's."""
    return DEMO_RULE if model == "demo" or is_demo_folder(model) else WAN_RULE


@dataclass(frozen=True)
class JobRequest:
    """Every field of the job panel; :meth:`args` picks what each command takes."""

    model: str
    prompt: str = ""
    negative_prompt: str = ""
    seed: int = 0
    steps: int = 20
    height: int = 64
    width: int = 64
    frames: int = 16
    profile: str = ""
    threshold: float = 0.999
    dense_steps: int = 0  # sparse clips: the first steps run dense (they decide the layout)
    compile: bool = False  # generate / compare: torch.compile the transformer (untimed compile first)
    mode: str = "sparse"  # generate only: "dense" or "sparse"
    bins: int = 4  # calibrate only
    block: int = 128  # calibrate only
    error_bound: float = 0.0  # calibrate only; 0: attention mass only, no error pass

    def args(self, kind: str) -> dict[str, Any]:
        """The protocol arguments of a ``kind`` command (see engine.protocol.SCHEMA and engine.server)."""
        size = {"height": self.height, "width": self.width, "frames": self.frames, "steps": self.steps}
        if kind == "calibrate":
            return {"profile": self.profile, "seed": self.seed, "bins": self.bins, "block": self.block,
                    "error_bound": self.error_bound, **size}
        clip = {"prompt": self.prompt.strip(), "negative_prompt": self.negative_prompt.strip(), "seed": self.seed,
                "compile": self.compile, **size}
        sparse = {"profile": self.profile, "threshold": self.threshold, "dense_steps": self.dense_steps}
        if kind == "compare":
            return {**clip, **sparse}
        if kind == "generate":
            sparse = sparse if self.mode == "sparse" else {}
            return {**clip, "mode": self.mode, **sparse}
        raise ValueError(f"unknown job kind {kind!r}; expected one of {', '.join(KINDS)}")

    def uses_profile(self, kind: str) -> bool:
        """Whether ``kind`` reads an existing profile (calibrate writes one instead)."""
        return kind == "compare" or (kind == "generate" and self.mode == "sparse")


def validate(kind: str, request: JobRequest) -> list[str]:
    """Everything wrong with ``request`` for a ``kind`` job, one sentence each (empty: good to go)."""
    problems = []
    if not request.model.strip():
        problems.append("choose a model: 'demo', 'tiny' or a local diffusers folder")
    elif request.model not in BUNDLED_MODELS and not Path(request.model).is_dir():
        problems.append(f"model {request.model!r} is neither {' nor '.join(map(repr, BUNDLED_MODELS))} "
                        "nor an existing folder")
    if kind != "calibrate" and not request.prompt.strip():
        problems.append("write a prompt")
    if not 1 <= request.steps <= MAX_STEPS:
        problems.append(f"steps must be 1..{MAX_STEPS}, got {request.steps}")
    if not (0 < request.height <= MAX_SIDE and 0 < request.width <= MAX_SIDE):
        problems.append(f"size {request.width}x{request.height} is outside 1..{MAX_SIDE} pixels a side")
    elif not 0 < request.frames <= MAX_FRAMES:
        problems.append(f"frames must be 1..{MAX_FRAMES}, got {request.frames}")
    else:
        problems += size_rule(request.model).problems(request.height, request.width, request.frames)
    profile = request.profile.strip()
    if kind == "calibrate":
        if not profile:
            problems.append("choose where to write the profile (.safetensors)")
        elif not Path(profile).parent.is_dir():
            problems.append(f"the folder of {profile} does not exist")
        elif not profile.endswith(".safetensors"):
            problems.append(f"the profile must be a .safetensors file, got {os.path.basename(profile)}")
        if request.block not in BLOCK_SIZES:
            problems.append(f"block size must be one of {BLOCK_SIZES}, got {request.block}")
        if not 1 <= request.bins <= request.steps:
            problems.append(f"step bins must be 1..steps ({request.steps}), got {request.bins}")
    elif request.uses_profile(kind):
        if not profile:
            problems.append(f"{kind} {'sparse ' if kind == 'generate' else ''}needs a calibration profile: "
                            "calibrate one or choose a file")
        elif not Path(profile).is_file():
            problems.append(f"no profile at {profile}")
        if not 0 <= request.dense_steps <= request.steps:
            problems.append(f"dense steps must be 0..steps ({request.steps}), got {request.dense_steps}")
    return problems
