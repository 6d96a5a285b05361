"""A training-time locality prior: teaches the demo model to attend the way real video transformers do.

Why: on flat backgrounds the demo model's self-attention spread its mass evenly over all frames
(background keys are near-identical), so calibration kept ~85% of the blocks and a sparse step on
the CPU was no faster than a dense one. Real video DiTs attend mostly inside a frame and to the same
place in nearby frames; this penalty asks the demo model for that too. Each head gets a block
window: even heads are *spatial* (the blocks of the query's own latent frame), odd heads are
*temporal* (the same place in the previous and the next latent frame). The penalty is the mean
softmax mass a query puts outside its head's window, computed on a few clips of each batch while
the whole batch runs plain dense attention — the model still sees every key, so dense generation
stays the model's own and the calibrated sparse one only drops what it learned to ignore.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from calibstudio.engine.attention_hook import dense_attention


def locality_windows(grid: tuple[int, int, int], heads: int, block: int, anchor: bool = False,
                     far: tuple[int, ...] = ()) -> torch.Tensor:
    """``[heads, nb, nb]`` bool: the key blocks each query block of each head may use.

    ``grid``: latent (frames, height, width) in tokens, frame-major order; a latent frame must be
    a whole number of blocks (so a block never straddles two frames). ``anchor``: temporal heads also
    see the same place in the first latent frame — one reach to a shared frame, so a decision that
    concerns the whole clip (where the shape starts) can be read by every frame in one layer
    instead of hopping one frame per layer (6 layers do not span 8 latent frames). ``far``: every
    second temporal head (heads 3, 7, ...) also sees the same place this many latent frames away —
    dilated reaches (e.g. 4 and 8) that let distant frames agree on the shape's path within a few
    layers at the price of a few blocks per query; the neighbours stay, so a model trained on the
    plain windows keeps what it learned (v4's head 3 put ~100% of its mass outside reaches 4 and 8).
    """
    frames, height, width = grid
    per_frame = height * width
    if per_frame % block:
        raise ValueError(f"a latent frame of {per_frame} tokens is not a whole number of {block}-token blocks")
    blocks_per_frame = per_frame // block
    b = torch.arange(frames * blocks_per_frame)
    frame, place = b // blocks_per_frame, b % blocks_per_frame
    same_frame = frame[:, None] == frame[None, :]
    distance, first = (frame[:, None] - frame[None, :]).abs(), anchor & (frame[None, :] == 0)
    same_place = place[:, None] == place[None, :]
    next_frame = ((distance == 1) | first) & same_place
    far_frame = next_frame | (torch.isin(distance, torch.tensor(far, dtype=distance.dtype)) & same_place)
    head = torch.arange(heads)[:, None, None]
    return torch.where(head % 2 == 0, same_frame, torch.where(head % 4 == 3, far_frame, next_frame))


class LocalityPenalty:
    """Use as an ``AttentionHook`` ``dense_fn``: dense attention, plus the out-of-window mass of ``sample`` clips.

    ``take()`` returns one term per call since the last ``take()`` (one per self-attention layer and
    forward, in layer order) and starts afresh. ``weights`` (``[B]``, optional): how much each
    sampled clip counts — 0 for clips the prior should leave alone (``train --local-below``: noise
    levels whose steps run dense). With ``restrict_from`` set, the batch rows from that index on
    attend inside their windows only — what a sparse step that keeps just the windows computes — so
    that training can ask for the same prediction with and without the far keys.
    """

    def __init__(self, grid: tuple[int, int, int], heads: int, block: int = 128, sample: int = 8,
                 anchor: bool = False, far: tuple[int, ...] = (), device: str | torch.device = "cpu") -> None:
        windows = locality_windows(grid, heads, block, anchor, far).to(device)
        tokens = grid[0] * grid[1] * grid[2]
        self.inside = windows.repeat_interleave(block, 1).repeat_interleave(block, 2)[:, :tokens, :tokens]
        self.sample = sample
        self.restrict_from: int | None = None
        self.weights: torch.Tensor | None = None
        self._terms: list[torch.Tensor] = []

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        n = min(self.sample, q.shape[0])
        if n and torch.is_grad_enabled():
            per_clip = self.outside_mass(q[:n], k[:n]).mean((1, 2))
            w = torch.ones_like(per_clip) if self.weights is None else self.weights[:n].to(per_clip.dtype)
            self._terms.append((per_clip * w).sum() / w.sum().clamp(min=1))
        r = self.restrict_from
        if r is None:
            return dense_attention(q, k, v)
        return torch.cat([dense_attention(q[:r], k[:r], v[:r]), self.windowed_attention(q[r:], k[r:], v[r:])])

    def windowed_attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Attention over each head's window only ((B, S, H, D) inputs)."""
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                             attn_mask=self.inside)
        return out.transpose(1, 2)

    def outside_mass(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """``[B, H, S]``: the softmax mass each query puts outside its head's window ((B, S, H, D) inputs)."""
        scores = torch.einsum("bqhd,bkhd->bhqk", q, k).float() * q.shape[-1] ** -0.5
        return (scores.masked_fill(self.inside, float("-inf")).logsumexp(-1) - scores.logsumexp(-1)).exp()

    def take(self) -> torch.Tensor:
        if not self._terms:
            raise RuntimeError("no self-attention ran with gradients since the last take()")
        value = torch.stack(self._terms)
        self._terms.clear()
        return value
