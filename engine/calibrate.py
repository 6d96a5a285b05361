"""Calibration: run the model densely on a few prompts, record block attention mass, write a profile."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from calibstudio.engine.attention_hook import AttentionHook, MassRecorder
from calibstudio.engine.models.base import VideoModelAdapter
from calibstudio.engine.profile import Profile, ProfileMeta, ProfileWriter
from calibstudio.engine.progress import Progress
from calibstudio.engine.trajectory import Trajectory


@dataclass(frozen=True)
class CalibrationSettings:
    """What a calibration ran with; stored in the profile so a run can be repeated."""

    height: int
    width: int
    frames: int
    steps: int
    bins: int = 4
    guidance_scale: float = 5.0
    negative_prompt: str = ""
    seed: int = 0
    block: int = 128
    recommended_threshold: float | None = None  # the model's; the studio starts a fresh session's tau there


def equal_step_bins(steps: int, bins: int) -> tuple[tuple[int, int], ...]:
    """``bins`` contiguous bins of (nearly) equal length covering ``steps``."""
    if not 1 <= bins <= steps:
        raise ValueError(f"cannot split {steps} steps into {bins} bins; use 1..{steps} bins")
    edges = np.linspace(0, steps, bins + 1).round().astype(int)
    return tuple((int(a), int(b)) for a, b in zip(edges[:-1], edges[1:], strict=True))


def calibrate(
    pipe: Any,
    adapter: VideoModelAdapter,
    prompts: list[str],
    settings: CalibrationSettings,
    out: str | Path,
    progress: Progress | None = None,
) -> Profile:
    """Record block mass on ``prompts`` (seed ``settings.seed + i`` for prompt ``i``) and write ``out``.

    Costs about one dense generation per prompt plus the mass kernel. Nothing is written unless
    every prompt finished; a cancelled calibration leaves no file.
    """
    if not prompts:
        raise ValueError("calibration needs at least one prompt")
    progress = progress or Progress()
    s = settings
    grid = adapter.token_grid(pipe, s.height, s.width, s.frames)
    layers = sum(1 for _ in adapter.self_attention_modules(pipe.transformer))
    heads = pipe.transformer.config.num_attention_heads
    bins = equal_step_bins(s.steps, s.bins)
    meta = ProfileMeta(model=adapter.identity(pipe), grid=grid, block_size=(s.block, s.block), num_steps=s.steps,
                       step_bins=bins, layers=layers, heads=heads,
                       calibration={"prompts": list(prompts), "settings": asdict(s)})
    recorder = MassRecorder(len(prompts), bins, layers, heads, meta.nq, meta.nk, (s.block, s.block))
    total = len(prompts) * s.steps
    for i, prompt in enumerate(prompts):
        recorder.prompt = i
        hook = AttentionHook(adapter, pipe.transformer, mode="record", recorder=recorder)
        trajectory = Trajectory(pipe, adapter, adapter.encode(pipe, prompt, s.negative_prompt, s.guidance_scale),
                                adapter.initial_latents(pipe, s.height, s.width, s.frames, s.seed + i), s.steps, hook)
        while not trajectory.done:
            progress.update("calibrate", i * s.steps + trajectory.index, total)
            trajectory.step()
    progress.update("calibrate", total, total)
    writer = ProfileWriter(meta)
    for b in range(len(bins)):
        for layer in range(layers):
            per_prompt = recorder.mass[:, b, layer]
            writer.add(b, layer, per_prompt.sum(axis=0), per_prompt)
    return Profile.open(writer.save(out))
