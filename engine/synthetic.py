"""Synthetic block mass with the structure of video attention, for benchmarks, demos and tests.

Real calibrated heads of video transformers mix a local 3-D window (nearby tokens in space and
time), temporal stripes (the same spatial place in other frames) and attention sinks (the first
frame). This draws such heads on a real token grid, so profile sizes, heatmaps and the threshold
slider can be exercised at Wan scale without running a model.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from tqdm import tqdm

from calibstudio.engine.profile import ProfileError, ProfileMeta, ProfileWriter


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


def synthetic_meta(
    grid: tuple[int, int, int],
    layers: int,
    heads: int,
    bins: int,
    steps: int,
    block: int = 128,
    name: str = "synthetic",
    calibration: dict | None = None,
) -> ProfileMeta:
    """Metadata of a synthetic profile: ``bins`` equal step bins, the model labelled as synthetic."""
    if bins < 1 or steps < bins:
        raise ProfileError(f"need 1 <= bins <= steps, got {bins} bins for {steps} steps")
    edges = np.linspace(0, steps, bins + 1).astype(int)
    return ProfileMeta(
        model={"name": name, "class": "synthetic", "config_hash": "synthetic"},
        grid=grid, block_size=(block, block), num_steps=steps,
        step_bins=tuple((int(a), int(b)) for a, b in zip(edges[:-1], edges[1:], strict=True)),
        layers=layers, heads=heads, calibration=calibration or {},
    )


def write_synthetic_profile(
    path: str | os.PathLike[str],
    grid: tuple[int, int, int],
    layers: int,
    heads: int,
    bins: int,
    steps: int,
    block: int = 128,
    seed: int = 0,
    prompts: int = 4,
    noise: float = 0.1,
) -> Path:
    """Write a profile of synthetic video-attention block mass (labelled as synthetic in its model)."""
    calibration = {"prompts": [f"synthetic prompt {i}" for i in range(prompts)], "seed": seed, "noise": noise}
    writer = ProfileWriter(synthetic_meta(grid, layers, heads, bins, steps, block, calibration=calibration))
    rng = np.random.default_rng(seed)
    for b in tqdm(range(bins), desc="synthetic profile", unit="bin"):
        for layer in range(layers):
            mean, per_prompt = video_block_mass(grid, block, heads, rng, prompts=prompts, noise=noise)
            writer.add(b, layer, mean, per_prompt)
    return writer.save(path)
