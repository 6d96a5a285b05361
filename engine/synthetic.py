"""Synthetic block mass with the structure of video attention, for benchmarks, demos and tests.

Real calibrated heads of video transformers mix a local 3-D window (nearby tokens in space and
time), temporal stripes (the same spatial place in other frames) and attention sinks (the first
frame). This draws such heads on a real token grid, so profile sizes, heatmaps and the threshold
slider can be exercised at Wan scale without running a model.
"""

from __future__ import annotations

import numpy as np


def block_centres(grid: tuple[int, int, int], block: int) -> np.ndarray:
    """Mean (frame, row, col) of the tokens of each block of a frame-major token sequence: ``[n, 3]``."""
    frames, height, width = grid
    tokens = np.arange(frames * height * width)
    coords = np.stack([tokens // (height * width), (tokens // width) % height, tokens % width], axis=1)
    n = -(-len(tokens) // block)
    sums = np.zeros((n, 3))
    np.add.at(sums, tokens // block, coords)
    counts = np.bincount(tokens // block, minlength=n)[:, None]
    return sums / counts


def video_block_mass(
    grid: tuple[int, int, int],
    block: int,
    heads: int,
    rng: np.random.Generator,
    prompts: int = 0,
    noise: float = 0.15,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Row-normalised block mass ``[heads, n, n]`` (float32) and, if ``prompts``, per-prompt variants.

    Each head draws its own window sizes and mix of local, stripe and sink attention; per-prompt
    copies apply multiplicative log-normal noise of scale ``noise`` around the mean pattern.
    """
    centres = block_centres(grid, block)
    df = np.abs(centres[:, None, 0] - centres[None, :, 0])
    ds2 = (centres[:, None, 1] - centres[None, :, 1]) ** 2 + (centres[:, None, 2] - centres[None, :, 2]) ** 2
    sink = (centres[None, :, 0] < 1.0).astype(np.float64)
    scale = max(grid[1], grid[2])
    out = np.empty((heads, len(centres), len(centres)), dtype=np.float32)
    for h in range(heads):
        space = scale * rng.uniform(0.02, 0.12)
        time = rng.uniform(0.3, 2.0)
        stripe = rng.uniform(0.0, 0.6) * np.exp(-ds2 / (2 * (0.4 * space) ** 2))
        local = np.exp(-ds2 / (2 * space**2) - df**2 / (2 * time**2))
        mass = local + stripe + rng.uniform(0.0, 0.3) * sink + 1e-7
        out[h] = mass / mass.sum(axis=-1, keepdims=True)
    if not prompts:
        return out, None
    varied = out[None] * np.exp(rng.normal(0.0, noise, size=(prompts, *out.shape))).astype(np.float32)
    varied /= varied.sum(axis=-1, keepdims=True)
    return varied.mean(axis=0), varied
