"""Quality of a sparse clip against the dense clip of the same seed: PSNR and SSIM."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def psnr(reference: np.ndarray, test: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB of uint8 clips ``[frames, height, width, 3]`` (inf if identical)."""
    _check(reference, test)
    mse = np.mean((reference.astype(np.float64) - test.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10.0 * np.log10(255.0**2 / mse))


def ssim(reference: np.ndarray, test: np.ndarray) -> float:
    """Mean structural similarity (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5) over frames
    and channels of uint8 clips."""
    _check(reference, test)
    x = torch.from_numpy(reference).double().permute(0, 3, 1, 2).reshape(-1, 1, *reference.shape[1:3])
    y = torch.from_numpy(test).double().permute(0, 3, 1, 2).reshape(-1, 1, *test.shape[1:3])
    size = min(11, x.shape[-1], x.shape[-2])
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * 1.5**2))
    window = (g[:, None] * g[None, :] / g.sum() ** 2)[None, None]
    mu_x, mu_y = F.conv2d(x, window), F.conv2d(y, window)
    var_x = F.conv2d(x * x, window) - mu_x**2
    var_y = F.conv2d(y * y, window) - mu_y**2
    cov = F.conv2d(x * y, window) - mu_x * mu_y
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    value = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return float(value.mean())


def _check(reference: np.ndarray, test: np.ndarray) -> None:
    if reference.shape != test.shape:
        raise ValueError(f"clips differ in shape: {reference.shape} vs {test.shape}")
