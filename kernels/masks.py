"""Synthetic block masks for tests and benchmarks: random blocks and video-shaped (local 3-D window + stripes)."""

from __future__ import annotations

import torch

__all__ = ["random_block_mask", "video_block_mask"]


def _keep_fraction(score: torch.Tensor, density: float) -> torch.Tensor:
    """Keep the lowest-score blocks of each head so that each head has ``density`` of its blocks."""
    H = score.shape[0]
    flat = score.reshape(H, -1)
    n = flat.shape[1]
    keep = max(1, min(n, round(density * n)))
    if keep >= n:
        return torch.ones_like(score, dtype=torch.bool)
    order = torch.argsort(flat, dim=1, stable=True)[:, :keep]
    out = torch.zeros_like(flat, dtype=torch.bool)
    out.scatter_(1, order, True)
    return out.view_as(score)


def random_block_mask(
    heads: int, nq: int, nk: int, density: float, seed: int = 0, device: str | torch.device = "cpu"
) -> torch.Tensor:
    """Uniformly random kept blocks per head at the given density, diagonal always kept."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    score = torch.rand(heads, nq, nk, generator=g)
    i = torch.arange(min(nq, nk))
    score[:, i, i] = -1.0
    return _keep_fraction(score.to(device), density)


def video_block_mask(
    heads: int,
    grid: tuple[int, int, int],
    density: float,
    block: int = 128,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """Video-shaped block mask over a frames x height x width token grid (frame-major token order).

    Each head mixes a local 3-D window around the query block with temporal stripes (the same spatial
    place in every frame); heads differ in how much they favour each, like spatial/temporal heads.
    """
    F, Hh, W = grid
    S = F * Hh * W
    nb = -(-S // block)
    t = torch.arange(nb * block).clamp(max=S - 1)
    f = (t // (Hh * W)).float().view(nb, block).mean(1)
    y = ((t // W) % Hh).float().view(nb, block).mean(1)
    x = (t % W).float().view(nb, block).mean(1)
    df = (f[:, None] - f[None, :]).abs() / max(F, 1)
    dy = (y[:, None] - y[None, :]).abs() / max(Hh, 1)
    dx = (x[:, None] - x[None, :]).abs() / max(W, 1)
    g = torch.Generator(device="cpu").manual_seed(seed)
    w_t = torch.rand(heads, generator=g) * 3.0 + 0.25  # temporal reach of the local window
    w_s = torch.rand(heads, generator=g) * 1.5 + 0.5  # stripe penalty
    local = torch.maximum(df[None] / w_t[:, None, None], torch.maximum(dy, dx)[None])
    stripe = (dy + dx)[None] * 4.0 + w_s[:, None, None] * 0.05
    score = torch.minimum(local, stripe) + 1e-3 * torch.rand(heads, nb, nb, generator=g)
    i = torch.arange(nb)
    score[:, i, i] = -1.0
    return _keep_fraction(score.to(device), density)
