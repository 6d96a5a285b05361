"""Prompt adherence for the demo model: does a clip show the colour, shape and motion its caption asks for?

The checker reads a clip with the generator's own rules, so that on the generator's renders it is
right (nearly) always and a generated clip is scored by how well it imitates them:

- background: the median of the border pixels (the shape never covers the whole border);
- foreground: per frame, pixels far from the background; the shape's colour is the mean of the
  most distinct of them, and a pixel belongs to the shape when it is more than half way from the
  background to that colour (which also undoes the anti-aliasing);
- colour: nearest palette entry (``scenes.SHAPE_COLORS``) over the first and the last frames; if
  they differ, the clip changes colour;
- shape: each of the generator's shapes, drawn by its own renderer with the foreground's area and
  centroid, is laid over the foreground; the closest wins, by vote over the largest frames;
- motion: area ratio first/last (grow, shrink), then the centroid track: net displacement (moves)
  versus path length (a bounce goes out and comes back).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from calibstudio.engine.models.demo.captions import ParsedCaption, parse_caption
from calibstudio.engine.models.demo.scenes import (
    BACKGROUNDS,
    PALETTE,
    SHAPE_AREA,
    SHAPE_CENTROID_DY,
    SHAPE_COLORS,
    SHAPES,
    shape_coverage,
)

# Thresholds, in 0..255 colour units and frame fractions. The generator keeps shape and background
# >= 100 apart and shape colours >= 95 apart; motions travel >= 0.3 of the frame, bounces come back
# >= 0.24, growth changes the area >= 2.9x: the thresholds sit well inside those margins.
_BORDER_SPREAD_MAX = 25.0  # mean absolute deviation of border pixels from their median
_CANDIDATE = 45.0  # a pixel this far from the background may belong to the shape
_CORE_SPREAD_MAX = 40.0  # the shape is one flat colour: std of its most distinct pixels
_MIN_AREA = 6  # pixels; fewer and the frame shows no shape
_MAX_AREA_FRACTION = 0.5
_RECOLOR_MIN_DISTANCE = 50.0
_GROW_RATIO = 1.5
_MOVE_MIN = 0.12
_BOUNCE_MIN = 0.10
_MIN_SWING = 0.03  # a centroid reversal smaller than this (2 pixels of 64) is jitter, not a turn
_TELEPORT = 0.15  # a centroid step this long (fraction of the frame) and 3x the clip's median step is a jump
_SHAPE_FRAMES = 3
ATTRIBUTES = ("color", "shape", "direction")  # what a caption is scored on, in report order


@dataclass(frozen=True)
class ClipReading:
    """What a clip shows, read without a caption; None where nothing could be read."""

    detected: bool
    color: str | None = None
    shape: str | None = None
    motion: str | None = None
    target_color: str | None = None
    background: str | None = None
    teleports: bool = False  # the shape jumps between two frames (see _teleports)

    def describe(self) -> str:
        """What the clip shows in words, e.g. "purple circle, recolor to yellow, on black"."""
        if not self.detected:
            return "no one flat-coloured shape on a flat background"
        motion = f"{self.motion} to {self.target_color}" if self.target_color else self.motion
        jumps = " (the shape jumps between frames)" if self.teleports else ""
        return f"{self.color} {self.shape}, {motion}, on {self.background}{jumps}"


@dataclass(frozen=True)
class Adherence:
    """A clip scored against its caption: per-attribute verdicts, what was read and what was asked.

    ``direction_ok`` covers the whole motion (for a colour change: also the target colour). An
    attribute the caption does not state counts as not adhered to, as it cannot be verified.
    """

    color_ok: bool
    shape_ok: bool
    direction_ok: bool
    background_ok: bool
    reading: ClipReading
    expected: ParsedCaption


def _as_float(clip: np.ndarray, value_range: tuple[float, float]) -> np.ndarray:
    arr = np.asarray(clip)
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f"expected a clip [F, H, W, 3], got shape {arr.shape}")
    if arr.dtype == np.uint8:
        return arr.astype(np.float32)
    lo, hi = value_range
    return np.clip((arr.astype(np.float32) - lo) * np.float32(255.0 / (hi - lo)), 0.0, 255.0)


def _nearest(rgb: np.ndarray, names: Sequence[str]) -> str:
    table = np.array([PALETTE[n] for n in names], dtype=np.float64)
    return names[int(np.argmin(np.linalg.norm(table - rgb, axis=1)))]


def _drop_isolated(mask: np.ndarray) -> np.ndarray:
    """Remove pixels without any of their 8 neighbours set (noise, not shape); mask [..., H, W]."""
    h, w = mask.shape[-2:]
    padded = np.pad(mask, [(0, 0)] * (mask.ndim - 2) + [(1, 1), (1, 1)]).astype(np.int8)
    neighbours = np.zeros(mask.shape, dtype=np.int8)
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            if dy != 1 or dx != 1:
                neighbours += padded[..., dy : dy + h, dx : dx + w]
    return mask & (neighbours > 0)


def classify_shape(coverage: np.ndarray, mask: np.ndarray) -> str:
    """Name the shape whose generator template, placed by area and centroid, best fits the foreground.

    ``coverage`` is the soft foreground [H, W] (0 background .. 1 shape), ``mask`` its thresholded
    form. Each candidate shape is rendered by the generator's own rule (``scenes.shape_coverage``)
    with the radius that gives the mask's area and the centre that gives its centroid; the one with
    the smallest L1 distance to ``coverage`` wins. Whole-area matching is robust to noisy and
    half-covered edge pixels, which single-feature rules (bounding-box fill) are not.
    """
    ys, xs = np.nonzero(mask)
    area = float(ys.size)
    cx, cy = float(xs.mean()) + 0.5, float(ys.mean()) + 0.5
    height, width = mask.shape
    pad = 3
    y0, y1 = max(0, ys.min() - pad), min(height, ys.max() + 1 + pad)
    x0, x1 = max(0, xs.min() - pad), min(width, xs.max() + 1 + pad)
    observed = coverage[y0:y1, x0:x1]
    best, best_err = SHAPES[0], np.inf
    for shape in SHAPES:
        radius = float(np.sqrt(area / SHAPE_AREA[shape]))
        template = shape_coverage(shape, cx, cy - SHAPE_CENTROID_DY[shape] * radius, radius, height, width, 2)
        err = float(np.abs(template[y0:y1, x0:x1] - observed).sum())
        if err < best_err:
            best, best_err = shape, err
    return best


def read_clip(clip: np.ndarray, value_range: tuple[float, float] = (0.0, 1.0)) -> ClipReading:
    """Read background, shape colour, shape and motion off a clip [F, H, W, 3].

    uint8 clips are taken as 0..255; float clips as ``value_range`` (default 0..1) and clipped.
    A clip without a flat background and one flat-coloured object gives ``detected=False``.
    """
    px = _as_float(clip, value_range)
    frames, height, width, _ = px.shape
    border = np.concatenate(
        [px[:, 0].reshape(-1, 3), px[:, -1].reshape(-1, 3), px[:, :, 0].reshape(-1, 3), px[:, :, -1].reshape(-1, 3)]
    )
    bg = np.median(border, axis=0)
    if float(np.mean(np.abs(border - bg))) > _BORDER_SPREAD_MAX:
        return ClipReading(detected=False)
    background = _nearest(bg, BACKGROUNDS)

    # Per frame, all frames at once: candidate pixels, the shape's colour from the most distinct of
    # them, then the soft foreground (projection onto the background-to-shape colour axis).
    diff = px - bg
    dist = np.sqrt(np.einsum("fhwc,fhwc->fhw", diff, diff))
    cand = dist > _CANDIDATE
    count = cand.reshape(frames, -1).sum(axis=1)
    ranked = np.sort(np.where(cand, dist, -1.0).reshape(frames, -1), axis=1)
    rank = height * width - count + np.floor(0.9 * np.maximum(count - 1, 0)).astype(int)
    ref = ranked[np.arange(frames), np.minimum(rank, height * width - 1)]
    core = (cand & (dist >= 0.75 * ref[:, None, None])).astype(px.dtype)
    n_core = np.maximum(core.reshape(frames, -1).sum(axis=1), 1.0)[:, None]
    fg = np.einsum("fhw,fhwc->fc", core, px) / n_core
    var = np.einsum("fhw,fhwc->fc", core, px * px) / n_core - fg * fg
    spread = np.sqrt(np.maximum(var, 0.0).mean(axis=1))
    axis = fg - bg
    norm2 = np.maximum((axis * axis).sum(axis=1), 1e-9)
    soft = np.einsum("fhwc,fc->fhw", diff, axis) / norm2[:, None, None]
    all_masks = _drop_isolated(soft > 0.5)
    all_areas = all_masks.reshape(frames, -1).sum(axis=1)
    valid = (
        (count >= _MIN_AREA)
        & (spread <= _CORE_SPREAD_MAX)
        & (norm2 >= _CANDIDATE**2)
        & (all_areas >= _MIN_AREA)
        & (all_areas <= _MAX_AREA_FRACTION * height * width)
    )
    keep = np.flatnonzero(valid)
    masks = all_masks[keep]
    colours = fg[keep]
    if len(masks) < max(2, frames // 2):
        return ClipReading(detected=False, background=background)

    n = len(masks)
    quarter = max(1, n // 4)
    first_rgb = np.median(colours[:quarter], axis=0)
    last_rgb = np.median(colours[-quarter:], axis=0)
    first, last = _nearest(first_rgb, SHAPE_COLORS), _nearest(last_rgb, SHAPE_COLORS)
    recolor = first != last and float(np.linalg.norm(first_rgb - last_rgb)) >= _RECOLOR_MIN_DISTANCE
    color = first if recolor else _nearest(np.median(colours, axis=0), SHAPE_COLORS)

    areas = all_areas[keep].astype(np.float64)
    big = np.flatnonzero(areas >= 0.6 * areas.max())
    chosen = big[np.linspace(0, big.size - 1, min(_SHAPE_FRAMES, big.size)).round().astype(int)]
    largest_index = int(np.argmax(areas))
    labels = {
        i: classify_shape(np.clip(soft[keep[i]], 0.0, 1.0), masks[i]) for i in {*chosen.tolist(), largest_index}
    }
    votes = Counter(labels[int(i)] for i in chosen)
    largest = labels[largest_index]
    shape = largest if votes[largest] == max(votes.values()) else votes.most_common(1)[0][0]

    track = _centroids(masks, width, height)
    motion: str
    if recolor:
        motion = "recolor"
    else:
        ratio = areas[-quarter:].mean() / areas[:quarter].mean()
        if ratio >= _GROW_RATIO:
            motion = "grow"
        elif ratio <= 1.0 / _GROW_RATIO:
            motion = "shrink"
        else:
            motion = _track_motion(track)
    return ClipReading(
        detected=True,
        color=color,
        shape=shape,
        motion=motion,
        target_color=last if recolor else None,
        background=background,
        teleports=_teleports(track),
    )


def _travel(p: np.ndarray, min_swing: float) -> float:
    """Distance travelled along a 1-D track, turning back only on reversals of at least ``min_swing``.

    Summing every frame-to-frame step instead adds up the centroid's pixel jitter: over 32 frames a small
    triangle moving straight left travelled 0.2 of the frame up and down, and read as a bounce.
    """
    pivot = peak = float(p[0])  # where the current leg started, and how far it has got
    total = 0.0
    for x in p[1:].tolist():
        if abs(x - pivot) > abs(peak - pivot) and (x - pivot) * (peak - pivot) >= 0:
            peak = x  # the leg goes on
        elif abs(x - peak) >= min_swing:  # it turned: the leg ends at its peak
            total += abs(peak - pivot)
            pivot, peak = peak, x
    return total + abs(peak - pivot) + abs(float(p[-1]) - peak)


def _centroids(masks: np.ndarray, width: int, height: int) -> np.ndarray:
    """The shape's centre in each frame it was found in, as fractions of the frame: ``[F, 2]`` (x, y)."""
    area = masks.sum(axis=(1, 2)).astype(np.float64)
    cx = (masks.sum(axis=1) * np.arange(width)).sum(axis=1) / area / width
    cy = (masks.sum(axis=2) * np.arange(height)).sum(axis=1) / area / height
    return np.stack([cx, cy], axis=1)


def _teleports(track: np.ndarray) -> bool:
    """Whether the shape jumps: one step far longer than the clip's usual one, as no generated scene moves.

    A model that loses track of where its shape is draws this (a climb that drops back and climbs again);
    the direction verdict may or may not catch it, so training counts it on its own.
    """
    steps = np.hypot(*np.diff(track, axis=0).T)  # read_clip finds the shape in 2 frames or more
    return float(steps.max()) > max(_TELEPORT, 3.0 * float(np.median(steps)))


def _track_motion(track: np.ndarray) -> str:
    """Classify the centroid track ``[F, 2]``: a bounce goes out and back, a move only out, else it stays."""
    net = track[-1] - track[0]
    path = np.array([_travel(track[:, axis], _MIN_SWING) for axis in range(2)])
    back = (path - np.abs(net)) / 2.0  # the shorter of the legs of an out-and-back path
    if back.max() >= _BOUNCE_MIN:
        return "bounce_lr" if back[0] >= back[1] else "bounce_ud"
    if np.abs(net).max() >= _MOVE_MIN:
        if abs(net[0]) >= abs(net[1]):
            return "right" if net[0] > 0 else "left"
        return "down" if net[1] > 0 else "up"
    return "stay"


def check_clip(clip: np.ndarray, caption: str, value_range: tuple[float, float] = (0.0, 1.0)) -> Adherence:
    """Score one clip against its caption (see :class:`Adherence`)."""
    expected = parse_caption(caption)
    reading = read_clip(clip, value_range)

    def same(predicted: str | None, wanted: str | None) -> bool:
        return reading.detected and wanted is not None and predicted == wanted

    direction_ok = same(reading.motion, expected.motion) and (
        expected.motion != "recolor" or expected.target_color is None or reading.target_color == expected.target_color
    )
    return Adherence(
        color_ok=same(reading.color, expected.color),
        shape_ok=same(reading.shape, expected.shape),
        direction_ok=direction_ok,
        background_ok=same(reading.background, expected.background),
        reading=reading,
        expected=expected,
    )


def score_clips(
    clips: Sequence[np.ndarray] | np.ndarray, captions: Sequence[str], value_range: tuple[float, float] = (0.0, 1.0)
) -> dict[str, float]:
    """Per-attribute prompt adherence over a set of clips: {"color", "shape", "direction"} as fractions."""
    if len(clips) != len(captions):
        raise ValueError(f"{len(clips)} clips but {len(captions)} captions")
    return summarise([check_clip(clip, text, value_range) for clip, text in zip(clips, captions, strict=True)])


def summarise(results: Sequence[Adherence]) -> dict[str, float]:
    """The fraction of clips that adhere, per attribute: {"color", "shape", "direction"} (0 for none)."""
    n = float(max(len(results), 1))
    return {k: sum(getattr(r, f"{k}_ok") for r in results) / n for k in ATTRIBUTES}


def teleport_count(results: Sequence[Adherence]) -> str:
    """How many clips show a jumping shape, as "k/n" (n counts every clip, read or not)."""
    return f"{sum(r.reading.teleports for r in results)}/{len(results)}"


def direction_by_motion(results: Sequence[Adherence]) -> dict[str, str]:
    """Direction hits per asked-for motion, e.g. {"recolor": "5/23", "up": "45/59"}: which motions a model
    misses (the overall fraction hides it, and held-out sets are uneven across motions)."""
    hits: Counter[str] = Counter()
    asked: Counter[str] = Counter()
    for r in results:
        motion = r.expected.motion or "unknown"
        asked[motion] += 1
        hits[motion] += r.direction_ok
    return {m: f"{hits[m]}/{asked[m]}" for m in sorted(asked)}
