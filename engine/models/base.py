"""What the engine needs to know about a video model, whatever its family."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch

if TYPE_CHECKING:
    from calibstudio.engine.attention_hook import AttentionHook


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

    def make_processor(self, hook: AttentionHook, layer: int) -> Any:
        """A diffusers attention processor that routes the attention itself through ``hook.attend``."""
        ...

    def preview(self, latents: torch.Tensor) -> np.ndarray:
        """A small uint8 ``[height, width, 3]`` image of the current latents, cheap enough for every step."""
        ...

    def identity(self, pipe: Any) -> dict[str, str]:
        """Model identity recorded in profiles: name, class and a hash of the transformer config."""
        ...
