"""Numpy helpers that turn block mass and masks into things pyqtgraph draws quickly.

Kept free of widgets so they can be timed and tested alone; all are vectorised because they run on
every slider tick.
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg

LOG_MASS_MIN = -6.0  # colour scale 1e-6 .. 1; smaller (and negligible) mass shows as the lowest colour
LOG_MASS_MAX = 0.0


def log_mass(mass: np.ndarray) -> np.ndarray:
    """log10 of block mass for display, with negligible (0) blocks just below the colour scale."""
    with np.errstate(divide="ignore"):
        out = np.log10(mass, dtype=np.float32)
    out[~np.isfinite(out)] = LOG_MASS_MIN - 1.0
    return out


def mask_outline(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Boundary of a boolean ``[rows, cols]`` mask as segment end points for ``connect="pairs"``.

    Pixel ``(i, j)`` covers ``x in [j, j+1], y in [i, i+1]`` (row-major image). Runs of collinear
    edges are merged into one segment, so a kept band costs a few segments, not one per block.
    """
    padded = np.pad(mask.astype(bool), 1)
    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    # horizontal edges at y = i between rows i-1 and i: [rows+1, cols]
    horizontal = padded[1:, 1:-1] != padded[:-1, 1:-1]
    for line, (start, stop) in _runs(horizontal):
        xs.append(np.stack([start, stop], axis=1).ravel())
        ys.append(np.repeat(line, 2))
    # vertical edges at x = j between columns j-1 and j: [rows, cols+1] -> transpose to run along y
    vertical = (padded[1:-1, 1:] != padded[1:-1, :-1]).T
    for line, (start, stop) in _runs(vertical):
        ys.append(np.stack([start, stop], axis=1).ravel())
        xs.append(np.repeat(line, 2))
    if not xs:
        return np.zeros(0), np.zeros(0)
    return np.concatenate(xs).astype(np.float64), np.concatenate(ys).astype(np.float64)


def _runs(edges: np.ndarray) -> list[tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]]:
    """Maximal runs of True along the last axis: ``[(line index, (start, stop))]`` as arrays."""
    padded = np.pad(edges, ((0, 0), (1, 1)))
    change = np.diff(padded.astype(np.int8), axis=1)
    starts = np.argwhere(change == 1)
    stops = np.argwhere(change == -1)
    if len(starts) == 0:
        return []
    # argwhere is row-major, so starts and stops pair up in order
    return [(starts[:, 0], (starts[:, 1], stops[:, 1]))]


def colour_table(name: str, points: int = 256) -> np.ndarray:
    """RGB lookup table ``[points, 3]`` (uint8) of a pyqtgraph colour map."""
    return pg.colormap.get(name).getLookupTable(0.0, 1.0, nPts=points, alpha=False, mode="byte")


def mass_rgb(mass: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Block mass as an RGB image ``[rows, cols, 3]`` on the log colour scale."""
    scaled = (log_mass(mass) - LOG_MASS_MIN) / (LOG_MASS_MAX - LOG_MASS_MIN)
    index = np.clip(scaled * (len(table) - 1), 0, len(table) - 1).astype(np.intp)
    return table[index]


def dim_dropped(rgb: np.ndarray, mask: np.ndarray, keep: float = 0.22) -> np.ndarray:
    """``rgb`` with blocks outside ``mask`` darkened, so the kept set stands out at a glance."""
    dimmed = (rgb * keep).astype(np.uint8)
    return np.where(mask[..., None], rgb, dimmed)
