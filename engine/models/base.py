"""What the engine needs to know about a video model, whatever its family."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch


@dataclass(frozen=True)
class Conditioning:
    """Encoded prompt (and negative prompt when guidance is on), shared by the trajectories of a job.

    ``contrast_embeds``: prompts to steer away from, besides the negative one, for the first
    ``contrast_steps`` steps, each with weight ``contrast_scale`` (the demo model's reverse guidance: its
    caption played backwards and there and back, while the motion is being decided); none for other models.
    """

    prompt_embeds: torch.Tensor
    negative_embeds: torch.Tensor | None
    guidance_scale: float
    contrast_embeds: tuple[torch.Tensor, ...] = ()
    contrast_scale: float = 0.0
    contrast_steps: int = 0

    def contrasts_at(self, step: int) -> tuple[torch.Tensor, ...]:
        """The contrast prompts that step ``step`` steers away from (none after ``contrast_steps``)."""
        return self.contrast_embeds if step < self.contrast_steps else ()

    def passes(self, step: int) -> int:
        """Transformer passes that step ``step`` makes: the prompt, the negative one, the contrasts."""
        return 1 + (self.negative_embeds is not None) + len(self.contrasts_at(step))


class ModelLoadError(ValueError):
    """A model folder cannot be loaded; the message names what is missing and what to do."""


class VideoModelAdapter(Protocol):
    """One per model family: token grid, which attention calls are video self-attention, identity."""

    def token_grid(self, pipe: Any, height: int, width: int, frames: int) -> tuple[int, int, int]:
        """Video tokens (frames, height, width) the transformer sees for a clip of this size."""
        ...

    def self_attention_modules(self, transformer: torch.nn.Module) -> Iterator[tuple[int, torch.nn.Module]]:
        """(layer index, attention module) of every self-attention over video tokens, in order."""
        ...

    def make_processor(self, site: int, layer: int) -> Any:
        """A diffusers attention processor that routes the attention itself through
        ``attention_hook.attend_at(site, layer, ...)`` (to the hook installed on transformer ``site``)."""
        ...

    def fused_forwards(self, transformer: torch.nn.Module) -> Iterator[tuple[torch.nn.Module, Callable]]:
        """(module, forward) pairs the hook swaps in while installed: the same math in fewer kernels."""
        ...

    def encode(self, pipe: Any, prompt: str, negative_prompt: str | None, guidance_scale: float) -> Conditioning:
        """Encode a prompt once for every trajectory of a job."""
        ...

    def initial_latents(self, pipe: Any, height: int, width: int, frames: int, seed: int) -> torch.Tensor:
        """Start noise from ``seed``; the same seed gives the same clip on any device."""
        ...

    def predict(self, pipe: Any, latents: torch.Tensor, t: torch.Tensor, embeds: torch.Tensor) -> torch.Tensor:
        """One transformer prediction for the scheduler's step."""
        ...

    def decode(self, pipe: Any, latents: torch.Tensor) -> np.ndarray:
        """Final latents to frames: ``uint8 [frames, height, width, 3]``."""
        ...

    def preview(self, latents: torch.Tensor) -> np.ndarray:
        """A small uint8 ``[height, width, 3]`` image of the current latents, cheap enough for every step."""
        ...

    def identity(self, pipe: Any) -> dict[str, Any]:
        """Model identity recorded in profiles: name, class, a hash of the transformer config, and its width
        (``inner_dim``: the studio's speed prediction scales the attention share of a step with it)."""
        ...
