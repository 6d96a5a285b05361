"""The oracle: plain torch attention with the block mask expanded to tokens (tests only; O(S^2) memory)."""

from __future__ import annotations

import math

import torch

from .layout import BlockLayout

__all__ = ["reference_attention", "reference_lse", "reference_block_mass"]


def _scores(q: torch.Tensor, k: torch.Tensor, layout: BlockLayout | None, scale: float | None) -> torch.Tensor:
    """Masked scores ``[B, H, Sq, Sk]`` in float64 from (B, S, H, D) inputs."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = torch.einsum("bqhd,bkhd->bhqk", q.double(), k.double()) * scale
    if layout is not None:
        s = s.masked_fill(~layout.to(q.device).token_mask().unsqueeze(0), float("-inf"))
    return s


def reference_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layout: BlockLayout | None = None, scale: float | None = None
) -> torch.Tensor:
    """Block-masked softmax attention on (B, S, H, D), computed in float64, returned in q's dtype."""
    p = torch.softmax(_scores(q, k, layout, scale), dim=-1)
    return torch.einsum("bhqk,bkhd->bqhd", p, v.double()).to(q.dtype)


def reference_lse(
    q: torch.Tensor, k: torch.Tensor, layout: BlockLayout | None = None, scale: float | None = None
) -> torch.Tensor:
    """Row log-sum-exp ``[B, H, Sq]`` (natural log, float32) of the masked scores."""
    return torch.logsumexp(_scores(q, k, layout, scale), dim=-1).float()


def reference_block_mass(
    q: torch.Tensor, k: torch.Tensor, block_q: int = 128, block_k: int = 128, scale: float | None = None
) -> torch.Tensor:
    """Dense attention mass per (head, qb, kb), summed over batch and the queries/keys of each block."""
    p = torch.softmax(_scores(q, k, None, scale), dim=-1)  # [B, H, Sq, Sk]
    B, H, Sq, Sk = p.shape
    nq, nk = -(-Sq // block_q), -(-Sk // block_k)
    p = torch.nn.functional.pad(p, (0, nk * block_k - Sk, 0, nq * block_q - Sq))
    return p.view(B, H, nq, block_q, nk, block_k).sum(dim=(0, 3, 5)).float()
