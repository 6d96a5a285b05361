"""Procedural clips for the bundled demo model: one coloured shape, one motion, a plain background.

The generator is numpy-only and deterministic: a :class:`Scene` holds every parameter that the
picture depends on, so the same scene always renders the same pixels, and the scene itself is the
ground truth that the prompt-adherence checker (``adherence.py``) scores generated clips against.

Coordinates are fractions of the frame (x of the width, y of the height, y grows downwards so
"up" means towards row 0); sizes are fractions of ``min(height, width)``. Time runs over the
whole clip, t = 0 at the first frame and t = 1 at the last, so a scene means the same motion at
any frame count or resolution.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace

import numpy as np

# --- The default clip and the model token grid it is meant for (the one place these live) -------
#
# The demo model is a small WanTransformer3DModel working on 16 RGB frames of 64x64 pixels. With a
# pixel-space patch of (2, 4, 4) (frames, height, width) the video becomes a grid of 8 x 16 x 16 =
# 2048 tokens: long enough that block-sparse attention has something to skip (the design asks for
# at least 2k tokens), short enough that a dense clip stays within a minute on two CPU cores. A
# (1, 4, 4) patch on the same clip gives 4096 tokens if the model side can afford it. 64 pixels
# keep the smallest shape (radius ~6 px) well resolved, so the checker can tell the shapes apart.
DEFAULT_FRAMES = 16
DEFAULT_HEIGHT = 64
DEFAULT_WIDTH = 64
DEFAULT_PATCH = (2, 4, 4)
DEFAULT_TOKEN_GRID = (
    DEFAULT_FRAMES // DEFAULT_PATCH[0],
    DEFAULT_HEIGHT // DEFAULT_PATCH[1],
    DEFAULT_WIDTH // DEFAULT_PATCH[2],
)
DEFAULT_TOKENS = DEFAULT_TOKEN_GRID[0] * DEFAULT_TOKEN_GRID[1] * DEFAULT_TOKEN_GRID[2]

# --- Vocabulary ------------------------------------------------------------------------------------

# Named colours, chosen far apart in RGB (pairwise distance >= 80 among shape colours) so that a
# generated clip's colour can be read back by nearest-palette classification.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (225, 30, 35),
    "green": (30, 190, 50),
    "blue": (35, 75, 235),
    "yellow": (245, 225, 30),
    "white": (245, 245, 245),
    "orange": (255, 135, 0),
    "purple": (150, 40, 205),
    "cyan": (30, 215, 225),
    "black": (12, 12, 12),
    "gray": (128, 128, 128),
}
SHAPE_COLORS: tuple[str, ...] = ("red", "green", "blue", "yellow", "white", "orange", "purple", "cyan")
BACKGROUNDS: tuple[str, ...] = ("black", "gray", "white", "blue", "green")
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond", "star")
# left/right/up/down: straight line; bounce_lr: moves horizontally and reflects off the left and
# right edges at least once ("bounces left and right"); bounce_ud: the same vertically; grow and
# shrink: the size changes in place; recolor: the colour blends into ``target_color`` in place.
MOTIONS: tuple[str, ...] = ("left", "right", "up", "down", "bounce_lr", "bounce_ud", "grow", "shrink", "recolor")

# Shapes and backgrounds that are not allowed together: the same colour, or too close to segment.
_MIN_FG_BG_DISTANCE = 100.0


def color_distance(a: str, b: str) -> float:
    """Euclidean RGB distance between two palette colours (0..441)."""
    return float(np.linalg.norm(np.subtract(PALETTE[a], PALETTE[b], dtype=np.float64)))


def compatible(color: str, background: str) -> bool:
    """Whether a shape of ``color`` can stand on ``background``: different and far enough to segment."""
    return color != background and color_distance(color, background) >= _MIN_FG_BG_DISTANCE


# --- Held-out combinations --------------------------------------------------------------------------

_HELD_OUT_SALT = b"calibstudio-demo-held-out-v1"
_HELD_OUT_MODULUS = 10  # about one (color, shape, motion) triple in ten is never trained on


def is_held_out(color: str, shape: str, motion: str) -> bool:
    """Whether a (colour, shape, motion) triple is reserved for evaluation.

    A fixed hash rule rather than a random draw, so that training and evaluation agree on the
    split without sharing state, and captions of held-out triples test compositional
    generalisation: every colour, shape and motion (and every pair of them) is still seen in
    training, only these particular combinations are not.
    """
    digest = hashlib.blake2b(f"{color}|{shape}|{motion}".encode(), key=_HELD_OUT_SALT, digest_size=8).digest()
    return int.from_bytes(digest, "little") % _HELD_OUT_MODULUS == 0


HELD_OUT: frozenset[tuple[str, str, str]] = frozenset(
    (c, s, m) for c in SHAPE_COLORS for s in SHAPES for m in MOTIONS if is_held_out(c, s, m)
)

# --- Scenes -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scene:
    """Everything a clip depends on; also the ground truth for prompt adherence.

    ``x``, ``y``: centre at t = 0 (fractions of width and height); ``vx``, ``vy``: displacement over
    the whole clip (same units; for bounces the unreflected travel); ``size``: radius at t = 0 as a
    fraction of ``min(height, width)``; ``growth``: radius at t = 1 over radius at t = 0;
    ``target_color``: the colour at t = 1 for ``recolor`` (else None); ``seed``: the seed the scene
    was sampled from (``sample_scene(seed)`` gives it back), -1 when built by hand. ``texture``: peak
    brightness change (0..255 units) of a smooth random pattern over the background, drawn from
    ``texture_seed`` and moving by (``pan_x``, ``pan_y``) frame fractions over the clip (a camera pan);
    0 is a plain background.
    """

    shape: str
    color: str
    background: str
    motion: str
    x: float = 0.5
    y: float = 0.5
    vx: float = 0.0
    vy: float = 0.0
    size: float = 0.14
    growth: float = 1.0
    target_color: str | None = None
    seed: int = -1
    texture: float = 0.0
    texture_seed: int = 0
    pan_x: float = 0.0
    pan_y: float = 0.0

    def __post_init__(self) -> None:
        if self.shape not in SHAPES:
            raise ValueError(f"unknown shape {self.shape!r}")
        if self.motion not in MOTIONS:
            raise ValueError(f"unknown motion {self.motion!r}")
        for name in (self.color, self.background, self.target_color):
            if name is not None and name not in PALETTE:
                raise ValueError(f"unknown colour {name!r}")
        if self.color == self.background:
            raise ValueError("the shape must not have the background's colour")
        if (self.motion == "recolor") != (self.target_color is not None):
            raise ValueError("target_color is set exactly when motion is 'recolor'")
        if self.target_color is not None and self.target_color in (self.color, self.background):
            raise ValueError("target_color must differ from the shape's and the background's colour")
        if not self.size > 0 or not self.growth > 0:
            raise ValueError("size and growth must be positive")
        if not 0.0 <= self.texture <= TEXTURE_MAX:
            raise ValueError(f"texture must be in 0..{TEXTURE_MAX}")

    @property
    def held_out(self) -> bool:
        """Whether this scene's (colour, shape, motion) triple is reserved for evaluation."""
        return is_held_out(self.color, self.shape, self.motion)


# Sampling ranges, in frame fractions for the default square frame.
_MARGIN = 0.025  # keep ~1.5 px between the shape and the frame edge at 64 px
_SIZE = (0.11, 0.16)  # radius ~7..10 px at 64 px
_GROW_SIZE, _GROW = (0.09, 0.12), (1.7, 2.1)
_SHRINK_SIZE, _SHRINK = (0.20, 0.25), (0.45, 0.55)
_MOVE_SPEED = (0.30, 0.50)  # 19..32 px over the clip at 64 px
_BOUNCE_SPEED, _BOUNCE_HIT = (0.80, 1.10), (0.30, 0.60)

_AXIS = {"left": (0, -1), "right": (0, 1), "up": (1, -1), "down": (1, 1), "bounce_lr": (0, 0), "bounce_ud": (1, 0)}


def _uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return float(rng.uniform(bounds[0], bounds[1]))


def make_scene(
    rng: np.random.Generator,
    *,
    color: str,
    shape: str,
    background: str,
    motion: str,
    target_color: str | None = None,
    seed: int = -1,
) -> Scene:
    """Draw the numeric parameters for given attributes, so the shape stays inside the frame.

    ``target_color`` is drawn when ``motion`` is ``recolor`` and none is given.
    """
    if motion == "recolor" and target_color is None:
        options = [c for c in SHAPE_COLORS if c != color and compatible(c, background)]
        target_color = options[int(rng.integers(len(options)))]
    if motion != "recolor":
        target_color = None
    x = y = 0.5
    vx = vy = 0.0
    growth = 1.0
    if motion == "grow":
        size, growth = _uniform(rng, _GROW_SIZE), _uniform(rng, _GROW)
    elif motion == "shrink":
        size, growth = _uniform(rng, _SHRINK_SIZE), _uniform(rng, _SHRINK)
    else:
        size = _uniform(rng, _SIZE)
    lo = size * max(1.0, growth) + _MARGIN
    hi = 1.0 - lo
    pos = [_uniform(rng, (lo, hi)), _uniform(rng, (lo, hi))]
    vel = [0.0, 0.0]
    if motion in ("left", "right", "up", "down"):
        axis, sign = _AXIS[motion]
        speed = _uniform(rng, _MOVE_SPEED)
        pos[axis] = _uniform(rng, (lo + speed, hi)) if sign < 0 else _uniform(rng, (lo, hi - speed))
        vel[axis] = sign * speed
    elif motion in ("bounce_lr", "bounce_ud"):
        axis, _ = _AXIS[motion]
        speed = _uniform(rng, _BOUNCE_SPEED)
        t_hit = min(_uniform(rng, _BOUNCE_HIT), 0.95 * (hi - lo) / speed)  # first wall hit mid-clip
        sign = 1 if rng.random() < 0.5 else -1
        pos[axis] = hi - speed * t_hit if sign > 0 else lo + speed * t_hit
        vel[axis] = sign * speed
    x, y = pos
    vx, vy = vel
    return Scene(
        shape=shape,
        color=color,
        background=background,
        motion=motion,
        x=x,
        y=y,
        vx=vx,
        vy=vy,
        size=size,
        growth=growth,
        target_color=target_color,
        seed=seed,
    )


def _pick(rng: np.random.Generator, options: tuple[str, ...] | list[str]) -> str:
    return options[int(rng.integers(len(options)))]


def sample_scene(rng: np.random.Generator | int, split: str = "train", texture: float = 0.0) -> Scene:
    """A random scene; ``split`` is "train" (never a held-out triple), "test" (only those) or "any".

    Given a Generator, one seed is drawn from it and the scene is built from that seed alone, so
    ``sample_scene(scene.seed, split, texture)`` reproduces any scene a training run saw. ``texture``
    > 0 adds a background pattern of peak strength between half of it and it, panning at random; the
    rest of the scene is the same as without it.
    """
    if split not in ("train", "test", "any"):
        raise ValueError(f"split must be 'train', 'test' or 'any', not {split!r}")
    seed = int(rng.integers(2**62)) if isinstance(rng, np.random.Generator) else int(rng)
    local = np.random.default_rng(seed)
    if split == "test":
        color, shape, motion = sorted(HELD_OUT)[int(local.integers(len(HELD_OUT)))]
    else:
        while True:
            color, shape, motion = _pick(local, SHAPE_COLORS), _pick(local, SHAPES), _pick(local, MOTIONS)
            if split == "any" or not is_held_out(color, shape, motion):
                break
    background = _pick(local, [b for b in BACKGROUNDS if compatible(color, b)])
    scene = make_scene(local, color=color, shape=shape, background=background, motion=motion, seed=seed)
    if texture <= 0:
        return scene
    extra = np.random.default_rng([seed, 2])  # its own stream: the scene's other draws stay as they were
    pan_x, pan_y = extra.uniform(-_PAN, _PAN, 2)
    return replace(scene, texture=float(extra.uniform(0.5, 1.0)) * min(texture, TEXTURE_MAX),
                   texture_seed=int(extra.integers(2**31)), pan_x=float(pan_x), pan_y=float(pan_y))


# --- Rendering --------------------------------------------------------------------------------------

# Background texture: a few plane waves (1.5..6 cycles across the frame) summed and clipped to -1..1,
# scaled by the scene's ``texture``. sqrt(3) * TEXTURE_MAX stays below the checker's foreground distance
# (adherence._CANDIDATE, 45), so a textured background never reads as the shape.
TEXTURE_MAX = 24.0
_TEXTURE_WAVES, _TEXTURE_CYCLES = 4, (1.5, 6.0)
_PAN = 0.4  # the most the pattern travels over the clip, per axis, in frame fractions


def background(scene: Scene, frames: int = DEFAULT_FRAMES, height: int = DEFAULT_HEIGHT,
               width: int = DEFAULT_WIDTH) -> np.ndarray:
    """The background alone, float RGB [F, H, W, 3]: the plain colour, plus the panning pattern if any."""
    bg = np.broadcast_to(np.asarray(PALETTE[scene.background], dtype=np.float64), (frames, height, width, 3))
    if scene.texture == 0:
        return bg
    rng = np.random.default_rng(scene.texture_seed)
    angle = rng.uniform(0, 2 * np.pi, _TEXTURE_WAVES)
    cycles = rng.uniform(*_TEXTURE_CYCLES, _TEXTURE_WAVES)
    phase = rng.uniform(0, 2 * np.pi, _TEXTURE_WAVES)
    t = (np.linspace(0.0, 1.0, frames) if frames > 1 else np.zeros(1))[:, None, None, None]
    x = ((np.arange(width) + 0.5) / width)[None, None, :, None] - scene.pan_x * t
    y = ((np.arange(height) + 0.5) / height)[None, :, None, None] - scene.pan_y * t
    a = 2 * np.pi * cycles * np.cos(angle) * x + phase  # [F, 1, W, waves]
    b = 2 * np.pi * cycles * np.sin(angle) * y  # [F, H, 1, waves]
    # cos(a + b) = cos a cos b - sin a sin b: two small tables and one contraction instead of F*H*W*waves cosines
    waves = np.einsum("fwk,fhk->fhw", np.cos(a[:, 0]), np.cos(b[:, :, 0])) - np.einsum(
        "fwk,fhk->fhw", np.sin(a[:, 0]), np.sin(b[:, :, 0]))
    pattern = np.clip(waves / 2, -1.0, 1.0)  # [F, H, W]
    return bg + scene.texture * pattern[..., None]


_SUPERSAMPLE = 4  # 4x4 samples per pixel: smooth enough edges for a 64 px clip

_STAR = np.array(
    [
        ((1.0 if k % 2 == 0 else 0.5) * np.cos(-np.pi / 2 + k * np.pi / 5),
         (1.0 if k % 2 == 0 else 0.5) * np.sin(-np.pi / 2 + k * np.pi / 5))
        for k in range(10)
    ]
)
# Polygons in units of the radius, y down: the triangle fills its 2r x 2r box with the apex up.
_POLYGONS = {
    "triangle": np.array([(0.0, -1.0), (1.0, 1.0), (-1.0, 1.0)]),
    "diamond": np.array([(0.0, -1.0), (1.0, 0.0), (0.0, 1.0), (-1.0, 0.0)]),
    "star": _STAR,
}
_SQUARE_HALF = 0.9  # so a square's area is close to a circle's of the same radius


def _inside(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Which points (in units of the radius, relative to the centre) lie inside the shape."""
    if shape == "circle":
        return u * u + v * v <= 1.0
    if shape == "square":
        return (np.abs(u) <= _SQUARE_HALF) & (np.abs(v) <= _SQUARE_HALF)
    poly = _POLYGONS[shape]
    inside = np.zeros(u.shape, dtype=bool)
    for (x0, y0), (x1, y1) in zip(poly, np.roll(poly, -1, axis=0), strict=True):
        if y0 == y1:
            continue
        crosses = (y0 > v) != (y1 > v)
        x_at = x0 + (v - y0) * (x1 - x0) / (y1 - y0)
        inside ^= crosses & (u < x_at)
    return inside


def _polygon_area_centroid(poly: np.ndarray) -> tuple[float, float]:
    x, y = poly[:, 0], poly[:, 1]
    xn, yn = np.roll(x, -1), np.roll(y, -1)
    cross = x * yn - xn * y
    area = cross.sum() / 2.0
    return float(abs(area)), float(((y + yn) * cross).sum() / (6.0 * area))


# Area (in radius^2) and vertical centroid offset (in radii, from the nominal centre) of each shape:
# what the checker needs to place a template of the generator's own shape over a clip's foreground.
SHAPE_AREA: dict[str, float] = {"circle": float(np.pi), "square": 4 * _SQUARE_HALF**2} | {
    name: _polygon_area_centroid(poly)[0] for name, poly in _POLYGONS.items()
}
SHAPE_CENTROID_DY: dict[str, float] = {"circle": 0.0, "square": 0.0} | {
    name: _polygon_area_centroid(poly)[1] for name, poly in _POLYGONS.items()
}


def shape_coverage(
    shape: str, cx: float, cy: float, radius: float, height: int, width: int, supersample: int = _SUPERSAMPLE
) -> np.ndarray:
    """Fraction of each pixel [H, W] covered by a shape centred at (cx, cy) pixels: the renderer's rule.

    ``supersample`` samples per pixel side: the renderer's 4 by default; fewer is a cheaper estimate.
    """
    cover = np.zeros((height, width), dtype=np.float64)
    if not radius > 0:
        return cover
    x0, x1 = max(0, int(np.floor(cx - radius)) - 1), min(width, int(np.ceil(cx + radius)) + 1)
    y0, y1 = max(0, int(np.floor(cy - radius)) - 1), min(height, int(np.ceil(cy + radius)) + 1)
    if x1 <= x0 or y1 <= y0:
        return cover
    offsets = (np.arange(supersample) + 0.5) / supersample
    xs = (np.arange(x0, x1)[:, None] + offsets[None]).ravel()
    ys = (np.arange(y0, y1)[:, None] + offsets[None]).ravel()
    u = np.broadcast_to((xs[None, :] - cx) / radius, (ys.size, xs.size))
    v = np.broadcast_to((ys[:, None] - cy) / radius, (ys.size, xs.size))
    hit = _inside(shape, u, v)
    cover[y0:y1, x0:x1] = hit.reshape(y1 - y0, supersample, x1 - x0, supersample).mean(axis=(1, 3))
    return cover


def _reflect(p: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Fold positions into [lo, hi] as a ball reflecting off both walls would."""
    span = hi - lo
    if span <= 0:
        return np.full_like(p, (lo + hi) / 2)
    q = np.mod(p - lo, 2 * span)
    return lo + np.where(q > span, 2 * span - q, q)


def trajectory(scene: Scene, frames: int = DEFAULT_FRAMES, height: int = DEFAULT_HEIGHT, width: int = DEFAULT_WIDTH):
    """Per-frame centre (pixels), radius (pixels) and RGB colour (0..255 floats) of the shape.

    Returns ``(cx, cy, radius, rgb)`` with shapes [F], [F], [F], [F, 3]; the renderer draws exactly
    these, and tests use them as ground truth.
    """
    t = np.linspace(0.0, 1.0, frames) if frames > 1 else np.zeros(1)
    base = min(height, width)
    radius = scene.size * base * (1.0 + (scene.growth - 1.0) * t)
    x = scene.x + scene.vx * t
    y = scene.y + scene.vy * t
    if scene.motion == "bounce_lr":
        lo = scene.size * base / width + _MARGIN
        x = _reflect(x, lo, 1.0 - lo)
    elif scene.motion == "bounce_ud":
        lo = scene.size * base / height + _MARGIN
        y = _reflect(y, lo, 1.0 - lo)
    start = np.asarray(PALETTE[scene.color], dtype=np.float64)
    rgb = np.repeat(start[None], frames, axis=0)
    if scene.target_color is not None:
        s = np.clip((t - 0.3) / 0.4, 0.0, 1.0)
        s = s * s * (3 - 2 * s)  # smoothstep: the change happens mid-clip
        end = np.asarray(PALETTE[scene.target_color], dtype=np.float64)
        rgb = start[None] * (1 - s[:, None]) + end[None] * s[:, None]
    return x * width, y * height, radius, rgb


def render(
    scene: Scene, frames: int = DEFAULT_FRAMES, height: int = DEFAULT_HEIGHT, width: int = DEFAULT_WIDTH
) -> np.ndarray:
    """Render a scene as uint8 frames [F, H, W, 3], anti-aliased by 4x4 supersampling.

    Deterministic: the pixels depend on the scene's parameters only.
    """
    cx, cy, radius, rgb = trajectory(scene, frames, height, width)
    bg = background(scene, frames, height, width)
    out = np.empty((frames, height, width, 3), dtype=np.float64)
    for f in range(frames):
        cover = shape_coverage(scene.shape, cx[f], cy[f], radius[f], height, width)[..., None]
        out[f] = bg[f] * (1 - cover) + rgb[f] * cover
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)
