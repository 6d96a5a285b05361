"""Calibration: run the model densely on a few prompts, record block attention mass, write a profile.

With an error bound, a second dense pass on the first prompts measures each head's attention-output
error at a ladder of thresholds and gives the heads that need it a threshold floor
(:mod:`calibstudio.engine.error_bound`).
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from calibstudio.engine.atomic import writable_destination
from calibstudio.engine.attention_hook import AttentionHook, MassRecorder, Recorder
from calibstudio.engine.error_bound import CANDIDATES, ErrorRecorder, floors_for
from calibstudio.engine.models.base import VideoModelAdapter
from calibstudio.engine.profile import NEVER, THRESHOLDS, Profile, ProfileMeta, ProfileWriter
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
    error_bound: float | None = None  # relative attention-output error a head may have; None: mass only
    error_prompts: int = 2  # how many of the prompts the error pass runs (one dense generation each)
    dense_steps: int = 0  # the model's dense first steps: a step bin of their own (see step_bins)


def equal_step_bins(steps: int, bins: int) -> tuple[tuple[int, int], ...]:
    """``bins`` contiguous bins of (nearly) equal length covering ``steps``."""
    if steps < 1:
        raise ValueError(f"calibration needs at least one denoising step, got {steps}")
    if not 1 <= bins <= steps:
        raise ValueError(f"cannot split {steps} steps into {bins} bins; use 1..{steps} bins")
    edges = np.linspace(0, steps, bins + 1).round().astype(int)
    return tuple((int(a), int(b)) for a, b in zip(edges[:-1], edges[1:], strict=True))


def step_bins(steps: int, bins: int, dense_steps: int = 0) -> tuple[tuple[int, int], ...]:
    """``bins`` contiguous step bins covering ``steps``.

    A model's dense first steps (``dense_steps``, e.g. a demo model trained with ``--local-below``)
    get the first bin to themselves: their attention was trained dense, and averaged into the next
    steps' bin it would make those sparse steps' masks dense too.
    """
    if 0 < dense_steps < steps and 2 <= bins <= steps - dense_steps + 1:
        rest = equal_step_bins(steps - dense_steps, bins - 1)
        return ((0, dense_steps), *((a + dense_steps, b + dense_steps) for a, b in rest))
    return equal_step_bins(steps, bins)


def calibrate(
    pipe: Any,
    adapter: VideoModelAdapter,
    prompts: list[str],
    settings: CalibrationSettings,
    out: str | Path,
    progress: Progress | None = None,
) -> Profile:
    """Record block mass on ``prompts`` (seed ``settings.seed + i`` for prompt ``i``) and write ``out``.

    Costs about one dense generation per prompt plus the mass kernel, and with an error bound one
    more per error prompt plus a sparse attention per candidate threshold. Nothing is written
    unless every pass finished; a cancelled calibration leaves no file.
    """
    if not prompts:
        raise ValueError("calibration needs at least one prompt")
    s = settings
    if s.error_bound is not None and not (s.error_bound > 0 and s.error_prompts >= 1):
        raise ValueError(f"error bound {s.error_bound} with {s.error_prompts} prompts: the bound must be positive "
                         f"and the error pass needs at least one prompt")
    out = writable_destination(out)
    progress = progress or Progress()
    grid = adapter.token_grid(pipe, s.height, s.width, s.frames)
    layers = sum(1 for _ in adapter.self_attention_modules(pipe.transformer))
    heads = pipe.transformer.config.num_attention_heads
    bins = step_bins(s.steps, s.bins, s.dense_steps)
    meta = ProfileMeta(model=adapter.identity(pipe), grid=grid, block_size=(s.block, s.block), num_steps=s.steps,
                       step_bins=bins, layers=layers, heads=heads,
                       calibration={"prompts": list(prompts), "settings": asdict(s)})
    recorder = MassRecorder(len(prompts), bins, layers, heads, meta.nq, meta.nk, (s.block, s.block))
    checked = prompts[: s.error_prompts] if s.error_bound is not None else []
    runs = _DensePasses(pipe, adapter, s, progress, (len(prompts) + len(checked)) * s.steps)
    passes = np.zeros(s.steps)
    for i, prompt in enumerate(prompts):
        recorder.prompt = i
        passes += runs.run(i, prompt, recorder)
    # the studio weighs each step's density by its passes when it predicts the speedup (Profile.density)
    meta = replace(meta, calibration={**meta.calibration,
                                      "passes_per_step": [round(float(n), 4) for n in passes / len(prompts)]})
    writer = ProfileWriter(meta)

    def add(b: int, layer: int, floors: np.ndarray | None = None) -> None:
        per_prompt = recorder.mass[:, b, layer]
        writer.add(b, layer, per_prompt.sum(axis=0), per_prompt, floors)

    for b in range(len(bins)):
        for layer in range(layers):
            add(b, layer)
    if checked:
        with tempfile.TemporaryDirectory(prefix=".calibrate-", dir=out.parent) as folder:
            with Profile.open(writer.save(Path(folder) / "mass-only.safetensors")) as mass_only:
                errors = ErrorRecorder(mass_only)
                for i, prompt in enumerate(checked):
                    runs.run(i, prompt, errors)
        relative = errors.relative_error()
        floors = floors_for(relative, s.error_bound)
        for b, layer in zip(*np.nonzero(floors.any(axis=2)), strict=True):
            add(b, layer, floors[b, layer])  # recompiled with the floors folded in
        writer.meta = replace(meta, calibration={**meta.calibration,
                                                 "error_bound": _floor_report(relative, floors, s, len(checked))})
    progress.update("calibrate", runs.total, runs.total)
    return Profile.open(writer.save(out))


class _DensePasses:
    """Dense trajectories with a recorder hooked in, reporting progress across every pass."""

    def __init__(self, pipe: Any, adapter: VideoModelAdapter, settings: CalibrationSettings, progress: Progress,
                 total: int) -> None:
        self.pipe, self.adapter, self.settings, self.progress, self.total = pipe, adapter, settings, progress, total
        self.done = 0

    def run(self, i: int, prompt: str, recorder: Recorder) -> np.ndarray:
        """One dense trajectory of ``prompt``; returns the transformer passes each step made."""
        s = self.settings
        hook = AttentionHook(self.adapter, self.pipe.transformer, mode="record", recorder=recorder)
        conditioning = self.adapter.encode(self.pipe, prompt, s.negative_prompt, s.guidance_scale)
        trajectory = Trajectory(self.pipe, self.adapter, conditioning,
                                self.adapter.initial_latents(self.pipe, s.height, s.width, s.frames, s.seed + i),
                                s.steps, hook)
        while not trajectory.done:
            self.progress.update("calibrate", self.done + trajectory.index, self.total)
            trajectory.step()
        self.done += s.steps
        return np.array([conditioning.passes(step) for step in range(s.steps)], dtype=np.float64)


def _floor_report(relative: np.ndarray, floors: np.ndarray, settings: CalibrationSettings,
                  prompts: int) -> dict[str, Any]:
    """What the error pass found, for the profile's metadata: the floored heads and the worst error."""
    floored = [[int(b), int(layer), int(h), 1.0 if f == NEVER else round(float(THRESHOLDS[f]), 6)]
               for b, layer, h in zip(*np.nonzero(floors), strict=True) for f in [floors[b, layer, h]]]
    return {"bound": settings.error_bound, "prompts": prompts, "candidates": list(CANDIDATES),
            "floored_heads": floored,  # [bin, layer, head, floor tau (1.0: dense)]
            "worst_error_by_candidate": [round(float(x), 5) for x in relative.max(axis=(0, 1, 2))]}
