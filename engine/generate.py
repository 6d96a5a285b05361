"""Generation jobs: one clip (dense or sparse) and the dense-vs-sparse compare in lockstep."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from calibstudio.engine.attention_hook import AttentionHook
from calibstudio.engine.compiled import compiled
from calibstudio.engine.metrics import psnr, ssim
from calibstudio.engine.models.base import VideoModelAdapter
from calibstudio.engine.profile import Profile
from calibstudio.engine.progress import Progress
from calibstudio.engine.timing import StepTimer
from calibstudio.engine.trajectory import Trajectory


@dataclass(frozen=True)
class GenerationSettings:
    """One clip's settings, recorded in every report."""

    prompt: str
    height: int
    width: int
    frames: int
    steps: int
    seed: int = 0
    guidance_scale: float = 5.0
    negative_prompt: str = ""
    threshold: float = 0.999
    warmup_steps: int = 0
    dense_steps: int = 0  # the first denoising steps of the sparse clip run dense (they decide the layout)
    compile: bool = False  # torch.compile the transformer (one throwaway step per variant compiles it untimed)

    def __post_init__(self) -> None:
        if self.steps < 1 or self.warmup_steps < 0:
            raise ValueError(f"a clip needs at least one denoising step and no negative warm-up steps; got "
                             f"{self.steps} steps and {self.warmup_steps} warm-up")
        if not isinstance(self.dense_steps, int) or not 0 <= self.dense_steps <= self.steps:
            raise ValueError(f"dense steps must be 0..{self.steps} (the clip's steps), got {self.dense_steps}")


@dataclass
class Clip:
    """A finished clip and how long each of its denoising steps took (ms)."""

    frames: np.ndarray
    step_ms: list[float] = field(default_factory=list)


def _sparse_hook(pipe: Any, adapter: VideoModelAdapter, profile: Profile, s: GenerationSettings,
                 backend: str) -> AttentionHook:
    profile.check_compatible(adapter.identity(pipe), adapter.token_grid(pipe, s.height, s.width, s.frames))
    if profile.meta.num_steps != s.steps:
        raise ValueError(f"the profile was calibrated with {profile.meta.num_steps} steps, not {s.steps}; "
                         f"generate with {profile.meta.num_steps} steps or calibrate for {s.steps}")
    return AttentionHook(adapter, pipe.transformer, mode="sparse", profile=profile, threshold=s.threshold,
                         backend=backend, dense_steps=s.dense_steps)


def _warm_up(pipe: Any, adapter: VideoModelAdapter, s: GenerationSettings, conditioning: Any, latents: Any,
             variants: list[AttentionHook | None], progress: Progress) -> None:
    """Steps thrown away so that the timed steps do not pay for first-call costs: ``warmup_steps`` dense
    ones, and when compiling one step of each variant the job runs (None: dense; a hook), which compiles it.

    They report as the ``warm-up`` phase: a first compile takes tens of seconds on a CPU and minutes for Wan,
    so the user sees what the job is doing and can cancel it there too."""
    dense = min(s.warmup_steps, s.steps)
    steps = [None] * dense + (list(variants) if s.compile else [])
    warm = None
    for i, hook in enumerate(steps):
        progress.update("warm-up", i, len(steps))
        if warm is None or i >= dense:  # one dense run of steps, then each compiled variant's own first step
            warm = Trajectory(pipe, adapter, conditioning, latents, s.steps, hook)
        warm.step()
    if steps:
        progress.update("warm-up", len(steps), len(steps))


def generate(pipe: Any, adapter: VideoModelAdapter, s: GenerationSettings, profile: Profile | None = None,
             progress: Progress | None = None, backend: str = "auto") -> Clip:
    """One clip: sparse when a profile is given, dense otherwise."""
    progress = progress or Progress()
    hook = _sparse_hook(pipe, adapter, profile, s, backend) if profile is not None else None
    conditioning = adapter.encode(pipe, s.prompt, s.negative_prompt, s.guidance_scale)
    latents = adapter.initial_latents(pipe, s.height, s.width, s.frames, s.seed)
    with compiled(pipe.transformer, s.compile):
        _warm_up(pipe, adapter, s, conditioning, latents, [hook], progress)
        trajectory = Trajectory(pipe, adapter, conditioning, latents, s.steps, hook)
        timer, clip = StepTimer(latents.device), Clip(frames=np.empty(0))
        while not trajectory.done:
            progress.update("generate", trajectory.index, s.steps)
            with timer.measure():
                trajectory.step()
            clip.step_ms.append(timer.last_ms)
    progress.update("generate", s.steps, s.steps)
    clip.frames = adapter.decode(pipe, trajectory.latents)
    return clip


@dataclass
class Comparison:
    """Dense and sparse clips of one seed, their per-step times and the quality of sparse vs dense."""

    settings: GenerationSettings
    dense: Clip
    sparse: Clip
    densities: np.ndarray  # [bins, layers, heads] at the threshold
    retained_mean: np.ndarray
    retained_worst: np.ndarray
    density: float  # of the sparse clip's attention, its dense first steps counted as 1

    @property
    def speedup(self) -> float:
        return float(sum(self.dense.step_ms) / max(sum(self.sparse.step_ms), 1e-9))

    def report(self) -> dict[str, Any]:
        """The JSON report: settings, densities, retained mass, per-step times, speedup, metrics."""
        return {
            "settings": asdict(self.settings),
            "density": self.density,
            "densities": self.densities.round(5).tolist(),
            "retained_mean": self.retained_mean.round(6).tolist(),
            "retained_worst": self.retained_worst.round(6).tolist(),
            "step_ms": {"dense": self.dense.step_ms, "sparse": self.sparse.step_ms},
            "speedup": self.speedup,
            "step_speedups": [d / max(s, 1e-9) for d, s in zip(self.dense.step_ms, self.sparse.step_ms, strict=True)],
            "psnr": psnr(self.dense.frames, self.sparse.frames),
            "ssim": ssim(self.dense.frames, self.sparse.frames),
        }


def compare(pipe: Any, adapter: VideoModelAdapter, s: GenerationSettings, profile: Profile,
            progress: Progress | None = None, backend: str = "auto",
            on_step: Any = None) -> Comparison:
    """Dense and sparse trajectories from one seed in lockstep: step k dense, then step k sparse.

    ``on_step(step, dense_ms, sparse_ms, dense_latents, sparse_latents)`` is called after each pair
    (the server streams timings and previews from it).
    """
    progress = progress or Progress()
    hook = _sparse_hook(pipe, adapter, profile, s, backend)
    conditioning = adapter.encode(pipe, s.prompt, s.negative_prompt, s.guidance_scale)
    latents = adapter.initial_latents(pipe, s.height, s.width, s.frames, s.seed)
    with compiled(pipe.transformer, s.compile):
        _warm_up(pipe, adapter, s, conditioning, latents, [None, hook], progress)
        dense = Trajectory(pipe, adapter, conditioning, latents, s.steps)
        sparse = Trajectory(pipe, adapter, conditioning, latents, s.steps, hook)
        timer = StepTimer(latents.device)
        dense_ms: list[float] = []
        sparse_ms: list[float] = []
        while not dense.done:
            progress.update("compare", dense.index, s.steps)
            for trajectory, times in ((dense, dense_ms), (sparse, sparse_ms)):
                with timer.measure():
                    trajectory.step()
                times.append(timer.last_ms)
            if on_step is not None:
                on_step(dense.index - 1, dense_ms[-1], sparse_ms[-1], dense.latents, sparse.latents)
    progress.update("compare", s.steps, s.steps)
    mean, worst = profile.retained(s.threshold)
    return Comparison(s, Clip(adapter.decode(pipe, dense.latents), dense_ms),
                      Clip(adapter.decode(pipe, sparse.latents), sparse_ms), profile.densities(s.threshold),
                      mean, worst, profile.density(s.threshold, s.dense_steps))
