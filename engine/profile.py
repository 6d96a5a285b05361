"""Calibration profiles: which attention blocks matter, for every step bin, layer and head.

A profile is one ``.safetensors`` file (never pickle) with JSON metadata beside the tensors. It is
torch-free (stdlib + numpy + safetensors) so the studio can open it without the engine.

What is stored, and why
-----------------------
Calibration measures the *block mass* ``m[qb, kb]``: the share of query block ``qb``'s softmax
probability that falls on key block ``kb`` (each row sums to 1). The mask for a retained-mass
threshold ``tau`` keeps, per row, the fewest key blocks (largest first) whose mass reaches ``tau``.

Thresholds are quantised onto ``N_LEVELS`` levels ``tau_0 = 0.90 < ... < tau_254 = 0.9999``, spaced
evenly in ``log10(1 - tau)`` (2.7 % steps of the lost mass). Every block has an *entry level* ``e``:
it is kept for every level ``g >= e`` (255 = never kept within the range). That makes everything
the slider needs a lookup:

- ``mask(tau) = entry_level <= level(tau)``: monotone in ``tau`` by construction, and the retained
  mass of every row on the calibration data is ``>= tau_level >= tau`` (a requested ``tau`` snaps up
  to the next level, never down);
- whole-model densities and retained mass (mean, and the worst calibration prompt) at every level
  are small ``[bins, layers, heads, levels]`` tables, so a new threshold costs microseconds.

Size (Wan-14B at 720p has 2.2 G blocks; the budget is 512 MB) is met by storing, per head, only
the block mass quantised in log space (``MASS_PER_DECADE`` steps a decade; 0 for blocks outside the
widest mask) plus a tiny per-row table giving the entry level of each quantised mass value. Entry
levels are derived from those two, conservatively (a group of equal quantised mass enters with its
earliest member). Rows that repeat across query blocks (the paper's observation) are stored once
with a per-row pattern index, and LZMA's long window catches rows repeated with a shift, as local
windows are. A heatmap read decompresses one head only, through safetensors' lazy slices.
"""

from __future__ import annotations

import json
import lzma
import math
import os
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from calibstudio.engine.atomic import WriteError, atomic_write

FORMAT_NAME = "calibstudio.profile"
FORMAT_VERSION = 1
N_LEVELS = 255
NEVER = 255  # entry level of blocks that no supported threshold keeps
TAU_MIN = 0.90
TAU_MAX = 0.9999
MASS_FLOOR = 1e-7
MASS_PER_DECADE = 8

THRESHOLDS = 1.0 - np.logspace(math.log10(1 - TAU_MIN), math.log10(1 - TAU_MAX), N_LEVELS)
_TABLES = ("kept_count", "retained_mean", "retained_worst", "head_offsets", "head_blobs")


class ProfileError(ValueError):
    """A profile cannot be read, written or used; the message names the problem and the remedy."""


@dataclass(frozen=True)
class ProfileMeta:
    """Everything about a profile except its tensors; stored as JSON in the safetensors header.

    ``grid`` is the video token grid ``(frames, height, width)`` in tokens and ``token_order`` how
    tokens are laid out in the sequence (diffusers: ``"fhw"``, frame-major). ``step_bins`` are
    half-open ``[start, end)`` ranges of denoising steps that share one mask.
    """

    model: dict[str, Any]
    grid: tuple[int, int, int]
    block_size: tuple[int, int]
    num_steps: int
    step_bins: tuple[tuple[int, int], ...]
    layers: int
    heads: int
    token_order: str = "fhw"
    calibration: dict[str, Any] = field(default_factory=dict)
    quality: dict[str, Any] = field(default_factory=dict)

    @property
    def tokens(self) -> int:
        return self.grid[0] * self.grid[1] * self.grid[2]

    @property
    def recommended_threshold(self) -> float | None:
        """The calibrated model's recommended tau, recorded at calibration (None in older profiles)."""
        value = (self.calibration.get("settings") or {}).get("recommended_threshold")
        return float(value) if isinstance(value, (int, float)) else None

    @property
    def threshold_floors(self) -> dict[tuple[int, int, int], float]:
        """(bin, layer, head) -> the tau that head never runs below (1.0: dense), set by an error-bounded
        calibration (:mod:`calibstudio.engine.error_bound`); already folded into the masks, this says why."""
        rows = (self.calibration.get("error_bound") or {}).get("floored_heads") or []
        return {(int(b), int(layer), int(h)): float(tau) for b, layer, h, tau in rows}

    @property
    def nq(self) -> int:
        return -(-self.tokens // self.block_size[0])

    @property
    def nk(self) -> int:
        return -(-self.tokens // self.block_size[1])

    @property
    def bins(self) -> int:
        return len(self.step_bins)

    def bin_of_step(self, step: int) -> int:
        """The step bin that denoising step ``step`` uses."""
        for b, (start, end) in enumerate(self.step_bins):
            if start <= step < end:
                return b
        raise ProfileError(f"step {step} is outside the calibrated steps 0..{self.num_steps - 1}")

    def validate(self) -> None:
        """Reject inconsistent metadata at construction time, not at use."""
        if len(self.grid) != 3 or min(self.grid) < 1:
            raise ProfileError(f"token grid must be three positive sizes (frames, height, width), got {self.grid}")
        if len(self.block_size) != 2 or min(self.block_size) < 1:
            raise ProfileError(f"block size must be two positive sizes (query, key), got {self.block_size}")
        if self.layers < 1 or self.heads < 1 or self.num_steps < 1:
            raise ProfileError(
                f"layers, heads and steps must be positive, got {self.layers}, {self.heads}, {self.num_steps}"
            )
        expected = 0
        for start, end in self.step_bins:
            if start != expected or end <= start:
                raise ProfileError(f"step bins must tile 0..{self.num_steps} in order, got {list(self.step_bins)}")
            expected = end
        if expected != self.num_steps:
            raise ProfileError(f"step bins must tile 0..{self.num_steps} in order, got {list(self.step_bins)}")
        passes = self.calibration.get("passes_per_step")
        if passes is not None and not (isinstance(passes, list) and len(passes) == self.num_steps
                                       and all(isinstance(n, int | float) and n > 0 for n in passes)):
            raise ProfileError(f"calibration passes_per_step must list {self.num_steps} positive numbers, one a step; "
                               "recalibrate the profile")

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ProfileMeta:
        data = json.loads(text)
        meta = cls(
            model=dict(data["model"]),
            grid=tuple(int(x) for x in data["grid"]),
            block_size=tuple(int(x) for x in data["block_size"]),
            num_steps=int(data["num_steps"]),
            step_bins=tuple((int(a), int(b)) for a, b in data["step_bins"]),
            layers=int(data["layers"]),
            heads=int(data["heads"]),
            token_order=str(data.get("token_order", "fhw")),
            calibration=dict(data.get("calibration", {})),
            quality=dict(data.get("quality", {})),
        )
        meta.validate()
        return meta


def threshold_level(threshold: float) -> int:
    """The quantised level used for ``threshold``: the lowest level whose threshold is >= it."""
    if not (TAU_MIN - 1e-12 <= threshold <= TAU_MAX + 1e-12):
        raise ProfileError(f"threshold {threshold} is outside the supported range {TAU_MIN}..{TAU_MAX}")
    return min(int(np.searchsorted(THRESHOLDS, threshold - 1e-12, side="left")), N_LEVELS - 1)


def entry_levels(mass: np.ndarray) -> np.ndarray:
    """Entry level of every block of row-normalised ``mass[..., nq, nk]``, as uint8.

    A block is needed at level ``g`` when the mass of the larger blocks of its row (ties broken by
    key index) is still below ``THRESHOLDS[g]``; its entry level is the first such ``g``.
    """
    order = np.argsort(-mass, axis=-1, kind="stable")
    ranked = np.take_along_axis(mass, order, axis=-1)
    before = np.cumsum(ranked, axis=-1)
    before = np.concatenate([np.zeros_like(before[..., :1]), before[..., :-1]], axis=-1)
    ranked_levels = np.searchsorted(THRESHOLDS, before, side="right").astype(np.uint8)
    levels = np.empty_like(ranked_levels)
    np.put_along_axis(levels, order, ranked_levels, axis=-1)
    return levels


def normalise_rows(mass: np.ndarray, dtype: type = np.float64) -> np.ndarray:
    """Rows of block mass as fractions; rows with no mass become uniform."""
    mass = np.asarray(mass, dtype=dtype)
    total = mass.sum(axis=-1, keepdims=True)
    if not np.all(np.isfinite(total)) or mass.min(initial=0) < 0:
        raise ProfileError("block mass must be finite and non-negative; the calibration produced invalid numbers")
    empty = total[..., 0] == 0
    if empty.any():
        mass = mass.copy()
        mass[empty] = 1.0
        total = mass.sum(axis=-1, keepdims=True)
    return mass / total


def quantise_mass(mass: np.ndarray, exact_levels: np.ndarray) -> np.ndarray:
    """Log-quantised mass (uint8, ``MASS_PER_DECADE`` steps a decade, >= 1); 0 for blocks never kept."""
    with np.errstate(divide="ignore"):
        q = np.round((np.log10(np.maximum(mass, 1e-30)) - math.log10(MASS_FLOOR)) * MASS_PER_DECADE) + 1
    q = np.clip(q, 1, 255).astype(np.uint8)
    q[exact_levels == NEVER] = 0
    return q


def dequantise_mass(q: np.ndarray) -> np.ndarray:
    """Inverse of :func:`quantise_mass` (float32; 0 where the block is negligible)."""
    mass = np.power(10.0, (q.astype(np.float32) - 1) / MASS_PER_DECADE + math.log10(MASS_FLOOR))
    return np.where(q == 0, 0.0, mass).astype(np.float32)


def entry_table(q: np.ndarray, exact_levels: np.ndarray) -> np.ndarray:
    """Per row and quantised mass value, the level at which that group of blocks enters: ``[nq, 256]``.

    Each group enters with its earliest member, so derived masks are supersets of the exact ones
    (the retained-mass guarantee holds) and cost 1-2 % extra density at 8 steps a decade.
    """
    rows = q.shape[0]
    table = np.full((rows, 256), NEVER, dtype=np.uint8)
    keys = (np.arange(rows)[:, None] * 256 + q).ravel()
    flat = exact_levels.ravel()
    latest_first = np.argsort(flat, kind="stable")[::-1]
    table.reshape(-1)[keys[latest_first]] = flat[latest_first]
    table[:, 0] = NEVER
    return table


def apply_floor(levels: np.ndarray, floor: int) -> np.ndarray:
    """Entry levels of a head that runs at ``max(tau, floor)``: blocks kept at ``floor`` enter at 0.

    ``entry <= max(g, floor)`` is ``entry <= g or entry <= floor``, so folding the floor into the
    entry levels makes every reader (masks, densities, retained mass, heatmaps) apply it with no
    code of its own. ``floor = NEVER`` keeps every block, including those no threshold keeps.
    """
    return np.where(levels <= floor, 0, levels).astype(np.uint8)


def _pack_head(q: np.ndarray, table: np.ndarray) -> bytes:
    """One head as bytes: unique mass rows once (in order of first use), a row -> pattern index, the
    entry table; LZMA's long window then also catches rows repeated shifted by a block."""
    _, first, inverse = np.unique(q, axis=0, return_index=True, return_inverse=True)
    by_first = np.argsort(first)
    rank = np.empty_like(by_first)
    rank[by_first] = np.arange(len(by_first))
    patterns = q[first[by_first]]
    index = rank[inverse.ravel()].astype(np.uint16)
    width = int(q.max(initial=0)) + 1
    header = struct.pack("<II", len(patterns), width)
    body = index.tobytes() + patterns.tobytes() + np.ascontiguousarray(table[:, :width]).tobytes()
    return lzma.compress(header + body, preset=1)


def _unpack_head(blob: bytes, nq: int, nk: int) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`_pack_head`: quantised mass ``[nq, nk]`` and entry levels ``[nq, nk]``."""
    raw = lzma.decompress(blob)
    count, width = struct.unpack_from("<II", raw)
    index = np.frombuffer(raw, dtype=np.uint16, count=nq, offset=8)
    patterns = np.frombuffer(raw, dtype=np.uint8, count=count * nk, offset=8 + 2 * nq).reshape(count, nk)
    table = np.frombuffer(raw, dtype=np.uint8, offset=8 + 2 * nq + count * nk).reshape(nq, width)
    if index.max(initial=0) >= count:
        raise ValueError("pattern index out of range")
    q = patterns[index]
    return q, np.take_along_axis(table, q.astype(np.intp), axis=1)


def _retained_by_level(levels: np.ndarray, masses: Sequence[np.ndarray]) -> np.ndarray:
    """Mean over rows of retained mass at every level, ``[len(masses), heads, N_LEVELS]``.

    ``levels`` is ``[heads, nq, nk]`` and each of ``masses`` a row-normalised array of that shape.
    """
    heads, nq = levels.shape[0], levels.shape[1]
    keys = (levels.reshape(heads, -1).astype(np.intp) + np.arange(heads)[:, None] * (NEVER + 1)).ravel()
    out = np.empty((len(masses), heads, N_LEVELS))
    for i, mass in enumerate(masses):
        sums = np.bincount(keys, weights=mass.reshape(-1), minlength=heads * (NEVER + 1))
        out[i] = np.cumsum(sums.reshape(heads, NEVER + 1)[:, :N_LEVELS], axis=1) / nq
    return out


@dataclass(frozen=True)
class CompiledLayer:
    """What one (step bin, layer) contributes to a profile; a plain value, so it can be built in a
    worker process and handed to :meth:`ProfileWriter.put`."""

    kept: np.ndarray
    retained_mean: np.ndarray
    retained_worst: np.ndarray
    blobs: tuple[bytes, ...]


def compile_layer(mass: np.ndarray, per_prompt: np.ndarray | None = None,
                  floors: np.ndarray | None = None) -> CompiledLayer:
    """Compile the block mass of one (step bin, layer).

    ``mass`` is ``[heads, nq, nk]`` (mean over prompts); ``per_prompt`` optionally
    ``[prompts, heads, nq, nk]`` for the worst-prompt numbers. Rows need not be normalised.
    ``floors`` optionally ``[heads]`` threshold levels below which a head never goes (``NEVER``:
    every block, a dense head); see :func:`apply_floor`.
    """
    if per_prompt is not None and tuple(per_prompt.shape[1:]) != tuple(mass.shape):
        raise ProfileError(f"per-prompt block mass has shape {tuple(per_prompt.shape)}, "
                           f"expected (prompts, {', '.join(map(str, mass.shape))})")
    mean = normalise_rows(mass)
    exact = entry_levels(mean)
    q = quantise_mass(mean, exact)
    levels = np.empty_like(exact)
    blobs = []
    for head in range(mass.shape[0]):
        table = entry_table(q[head], exact[head])
        if floors is not None:
            table = apply_floor(table, int(floors[head]))
        levels[head] = np.take_along_axis(table, q[head].astype(np.intp), axis=1)
        blobs.append(_pack_head(q[head], table))
    counts = np.stack([np.bincount(h.ravel(), minlength=NEVER + 1)[:N_LEVELS] for h in levels])
    retained = _retained_by_level(levels, [mean])[0]
    worst = retained
    if per_prompt is not None:
        worst = _retained_by_level(levels, list(normalise_rows(per_prompt, np.float32))).min(axis=0)
    return CompiledLayer(np.cumsum(counts, axis=1), retained, worst, tuple(blobs))


class ProfileWriter:
    """Builds a profile one (step bin, layer) at a time and writes it atomically on :meth:`save`.

    Streaming keeps memory at one layer of block mass, so a Wan-14B-sized profile can be built from
    calibration without holding every step, layer and head at once.
    """

    def __init__(self, meta: ProfileMeta) -> None:
        meta.validate()
        self.meta = meta
        shape = (meta.bins, meta.layers, meta.heads)
        self._kept = np.zeros((*shape, N_LEVELS), dtype=np.int32)
        self._retained_mean = np.full((*shape, N_LEVELS), np.nan, dtype=np.float32)
        self._retained_worst = np.full((*shape, N_LEVELS), np.nan, dtype=np.float32)
        self._blobs: dict[tuple[int, int, int], bytes] = {}

    def add(self, bin_index: int, layer: int, mass: np.ndarray, per_prompt: np.ndarray | None = None,
            floors: np.ndarray | None = None) -> None:
        """Compile and add (or replace) the block mass of one (step bin, layer); see :func:`compile_layer`."""
        m = self.meta
        if tuple(mass.shape) != (m.heads, m.nq, m.nk):
            raise ProfileError(f"block mass for bin {bin_index}, layer {layer} has shape {tuple(mass.shape)}, "
                               f"expected (heads, nq, nk) = {(m.heads, m.nq, m.nk)}")
        self.put(bin_index, layer, compile_layer(mass, per_prompt, floors))

    def put(self, bin_index: int, layer: int, compiled: CompiledLayer) -> None:
        """Store an already compiled (step bin, layer)."""
        m = self.meta
        if not (0 <= bin_index < m.bins and 0 <= layer < m.layers):
            raise ProfileError(f"bin {bin_index}, layer {layer} is outside {m.bins} bins x {m.layers} layers")
        if len(compiled.blobs) != m.heads:
            raise ProfileError(f"compiled layer has {len(compiled.blobs)} heads, the profile has {m.heads}")
        self._kept[bin_index, layer] = compiled.kept
        self._retained_mean[bin_index, layer] = compiled.retained_mean
        self._retained_worst[bin_index, layer] = compiled.retained_worst
        for head, blob in enumerate(compiled.blobs):
            self._blobs[(bin_index, layer, head)] = blob

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the profile to ``path`` via a temporary file and a rename: never half-written."""
        m = self.meta
        missing = [(b, layer) for b in range(m.bins) for layer in range(m.layers) if (b, layer, 0) not in self._blobs]
        if missing:
            raise ProfileError(f"profile is incomplete: no block mass for (bin, layer) {missing[:4]}"
                               f"{' ...' if len(missing) > 4 else ''}")
        offsets = np.zeros((m.bins, m.layers, m.heads, 2), dtype=np.int64)
        parts: list[bytes] = []
        position = 0
        for key in sorted(self._blobs):
            blob = self._blobs[key]
            offsets[key] = (position, len(blob))
            parts.append(blob)
            position += len(blob)
        tensors = {
            "kept_count": self._kept,
            "retained_mean": self._retained_mean,
            "retained_worst": self._retained_worst,
            "head_offsets": offsets,
            "head_blobs": np.frombuffer(b"".join(parts), dtype=np.uint8),
        }
        metadata = {"format": FORMAT_NAME, "version": str(FORMAT_VERSION), "meta": m.to_json()}
        try:
            return atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))
        except WriteError as error:
            raise ProfileError(str(error)) from error


def choose_step_bins(mass: np.ndarray, n_bins: int) -> tuple[tuple[int, int], ...]:
    """Split ``steps`` into ``n_bins`` contiguous bins whose block-mass patterns differ least.

    ``mass`` is ``[steps, ...]``. Minimises the summed squared distance of each step's pattern to
    its bin's mean by dynamic programming over a steps x steps Gram matrix, so the cost does not
    grow with the pattern size beyond one pass over the data.
    """
    steps = mass.shape[0]
    if not 1 <= n_bins <= steps:
        raise ProfileError(f"cannot split {steps} steps into {n_bins} bins; choose 1..{steps} bins")
    flat = mass.reshape(steps, -1)
    gram = np.zeros((steps, steps))
    for start in range(0, flat.shape[1], 1 << 20):
        chunk = flat[:, start:start + (1 << 20)].astype(np.float64)
        gram += chunk @ chunk.T
    square = np.zeros((steps + 1, steps + 1))
    square[1:, 1:] = gram.cumsum(0).cumsum(1)
    diagonal = np.concatenate([[0.0], np.cumsum(np.diag(gram))])

    def cost(i: int, j: int) -> float:
        block = square[j, j] - square[i, j] - square[j, i] + square[i, i]
        return diagonal[j] - diagonal[i] - block / (j - i)

    best = np.full((n_bins + 1, steps + 1), np.inf)
    cut = np.zeros((n_bins + 1, steps + 1), dtype=int)
    best[0, 0] = 0.0
    for b in range(1, n_bins + 1):
        for j in range(b, steps + 1):
            for i in range(b - 1, j):
                value = best[b - 1, i] + cost(i, j)
                if value < best[b, j] - 1e-12:
                    best[b, j], cut[b, j] = value, i
    bounds = [steps]
    for b in range(n_bins, 0, -1):
        bounds.append(cut[b, bounds[-1]])
    bounds.reverse()
    return tuple((int(bounds[i]), int(bounds[i + 1])) for i in range(n_bins))


def build_profile(
    path: str | os.PathLike[str],
    mass: np.ndarray,
    meta: ProfileMeta | dict[str, Any],
    per_prompt: np.ndarray | None = None,
    n_bins: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Profile:
    """Build and save a profile from whole arrays of block mass, then open it.

    ``mass`` is ``[steps, layers, heads, nq, nk]`` (mean over prompts), ``per_prompt`` optionally
    ``[prompts, steps, layers, heads, nq, nk]``. Steps are grouped into ``n_bins`` bins chosen by
    :func:`choose_step_bins` unless ``meta`` already names its ``step_bins``. Each bin's mass is the
    mean of its steps' row-normalised mass.
    """
    if isinstance(meta, dict):
        fields = dict(meta)
        if "step_bins" not in fields:
            fields["step_bins"] = choose_step_bins(normalise_rows(mass), n_bins or 1)
        fields.setdefault("num_steps", mass.shape[0])
        fields.setdefault("layers", mass.shape[1])
        fields.setdefault("heads", mass.shape[2])
        meta = ProfileMeta(**fields)
    if mass.shape[0] != meta.num_steps:
        raise ProfileError(f"block mass has {mass.shape[0]} steps but the profile says {meta.num_steps}")
    writer = ProfileWriter(meta)
    total = meta.bins * meta.layers
    for b, (start, end) in enumerate(meta.step_bins):
        for layer in range(meta.layers):
            bin_mass = normalise_rows(mass[start:end, layer]).mean(axis=0)
            bin_prompts = None
            if per_prompt is not None:
                bin_prompts = normalise_rows(per_prompt[:, start:end, layer]).mean(axis=1)
            writer.add(b, layer, bin_mass, bin_prompts)
            if progress is not None:
                progress(b * meta.layers + layer + 1, total)
    return Profile.open(writer.save(path))


@dataclass(frozen=True)
class HeadMap:
    """One head's heatmap: display mass (``[nq, nk]`` float32, 0 = negligible) and entry levels."""

    mass: np.ndarray
    entry_level: np.ndarray

    def mask(self, threshold: float) -> np.ndarray:
        return self.entry_level <= threshold_level(threshold)


class Profile:
    """A calibration profile opened for reading. Small tables load at once; heads load on demand.

    Use :meth:`open` (validates everything it can without reading every head).
    """

    def __init__(self, path: Path, meta: ProfileMeta, tables: dict[str, np.ndarray], handle: Any) -> None:
        self.path = path
        self.meta = meta
        self._kept = tables["kept_count"]
        self._retained_mean = tables["retained_mean"]
        self._retained_worst = tables["retained_worst"]
        self._offsets = tables["head_offsets"]
        self._handle = handle
        self._blob_bytes = int(handle.get_slice("head_blobs").get_shape()[0])

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> Profile:
        """Open and validate ``path``; raises :class:`ProfileError` with one clear line on any problem."""
        path = Path(path)
        if not path.is_file():
            raise ProfileError(f"no profile at {path}: the file does not exist")
        _check_header(path)
        try:
            handle = safe_open(str(path), framework="numpy")
        except (SafetensorError, OSError, ValueError) as error:
            raise ProfileError(f"{path} is truncated or corrupt ({error}); recalibrate or restore the file") from None
        header = handle.metadata() or {}
        if header.get("format") != FORMAT_NAME:
            raise ProfileError(f"{path} is a safetensors file but not a calibstudio profile "
                               f"(format={header.get('format')!r})")
        try:
            version = int(header.get("version", ""))
        except ValueError:
            raise ProfileError(f"{path} has an unreadable profile version {header.get('version')!r}") from None
        if version > FORMAT_VERSION:
            raise ProfileError(f"{path} is profile version {version}, newer than this calibstudio reads "
                               f"({FORMAT_VERSION}); upgrade calibstudio")
        try:
            meta = ProfileMeta.from_json(header.get("meta", ""))
        except ProfileError as error:
            raise ProfileError(f"{path}: {error}") from None
        except (ValueError, KeyError, TypeError) as error:
            raise ProfileError(f"{path} has unreadable metadata ({type(error).__name__}: {error})") from None
        names = set(handle.keys())
        for name in _TABLES:
            if name not in names:
                raise ProfileError(f"{path} is missing tensor {name!r}; the file is incomplete, recalibrate")
        tables = {name: handle.get_tensor(name) for name in _TABLES if name != "head_blobs"}
        _check_tables(path, meta, tables, int(handle.get_slice("head_blobs").get_shape()[0]))
        return cls(path, meta, tables, handle)

    def __repr__(self) -> str:
        m = self.meta
        return (f"Profile({self.path.name}: model={m.model.get('name', '?')}, grid={m.grid} ({m.tokens} tokens), "
                f"blocks={m.nq}x{m.nk} of {m.block_size[0]}, bins={m.bins}, layers={m.layers}, heads={m.heads}, "
                f"density@0.999={self.density(0.999):.3f})")

    def __enter__(self) -> Profile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the file (the handle maps it; on Windows an open map blocks replacing the file)."""
        self._handle = None

    def densities(self, threshold: float) -> np.ndarray:
        """Fraction of blocks kept at ``threshold``, ``[bins, layers, heads]`` (float64)."""
        return self._kept[..., threshold_level(threshold)] / float(self.meta.nq * self.meta.nk)

    def density(self, threshold: float, dense_steps: int = 0) -> float:
        """Whole-model fraction of attention blocks computed at ``threshold`` over a clip's steps.

        ``dense_steps``: the first steps run dense (as ``--dense-steps`` makes them) and count as 1.
        Each step counts with the transformer passes it made in calibration (``passes_per_step``: guidance
        and contrast prompts; a step with four passes costs twice one with two); equally where not recorded.
        """
        per_bin = self.densities(threshold).mean(axis=(1, 2))
        per_step = np.concatenate([np.full(end - start, d, dtype=np.float64)
                                   for (start, end), d in zip(self.meta.step_bins, per_bin, strict=True)])
        per_step[:dense_steps] = 1.0
        return float(np.average(per_step, weights=self.meta.calibration.get("passes_per_step")))

    def retained(self, threshold: float) -> tuple[np.ndarray, np.ndarray]:
        """Retained attention mass at ``threshold``: (mean, worst prompt), each ``[bins, layers, heads]``."""
        level = threshold_level(threshold)
        return self._retained_mean[..., level], self._retained_worst[..., level]

    def effective_threshold(self, threshold: float) -> float:
        """The quantised threshold actually applied for ``threshold`` (always >= it)."""
        return float(THRESHOLDS[threshold_level(threshold)])

    def heatmap(self, bin_index: int, layer: int, head: int) -> HeadMap:
        """Read one head lazily: decompresses only that head's blob."""
        m = self.meta
        if not (0 <= bin_index < m.bins and 0 <= layer < m.layers and 0 <= head < m.heads):
            raise ProfileError(f"(bin {bin_index}, layer {layer}, head {head}) is outside "
                               f"{m.bins} bins x {m.layers} layers x {m.heads} heads")
        if self._handle is None:
            raise ProfileError(f"{self.path} is closed")
        start, length = (int(x) for x in self._offsets[bin_index, layer, head])
        blob = self._handle.get_slice("head_blobs")[start:start + length]
        try:
            q, levels = _unpack_head(blob.tobytes(), m.nq, m.nk)
        except (lzma.LZMAError, ValueError, struct.error) as error:
            raise ProfileError(f"{self.path}: head data for bin {bin_index}, layer {layer}, head {head} "
                               f"is corrupt ({error}); recalibrate or restore the file") from None
        return HeadMap(mass=dequantise_mass(q), entry_level=levels)

    def entry_levels(self, bin_index: int, layer: int) -> np.ndarray:
        """Entry levels ``[heads, nq, nk]`` (uint8) of one (bin, layer): its mask at every threshold."""
        return np.stack([self.heatmap(bin_index, layer, h).entry_level for h in range(self.meta.heads)])

    def mask(self, bin_index: int, layer: int, threshold: float) -> np.ndarray:
        """Boolean block mask ``[heads, nq, nk]`` of one (bin, layer) at ``threshold``."""
        return self.entry_levels(bin_index, layer) <= threshold_level(threshold)

    def check_compatible(self, model: dict[str, Any], grid: Sequence[int]) -> None:
        """Raise if this profile was calibrated for another model or token grid."""
        mine = self.meta.model
        for key in ("class", "config_hash"):
            if key in mine and key in model and mine[key] != model[key]:
                raise ProfileError(f"{self.path} was calibrated for {mine.get('name', mine[key])} "
                                   f"({key} {mine[key]}), not for this model ({model[key]}); calibrate it")
        if tuple(grid) != tuple(self.meta.grid):
            raise ProfileError(f"{self.path} was calibrated for token grid {self.meta.grid} (frames, height, "
                               f"width), not {tuple(grid)}; use the calibrated size or calibrate for this one")


def _check_header(path: Path) -> None:
    """Name truncation and foreign files before safetensors' generic errors do."""
    size = path.stat().st_size
    with open(path, "rb") as handle:
        head = handle.read(9)
    if len(head) < 9:
        raise ProfileError(f"{path} is truncated ({size} bytes) or not a profile; recalibrate or restore it")
    (length,) = struct.unpack("<Q", head[:8])
    if head[8:9] != b"{":
        raise ProfileError(f"{path} is not a calibstudio profile (not a safetensors file)")
    if 8 + length > size:
        raise ProfileError(f"{path} is truncated: its header needs {8 + length} bytes, the file has {size}; "
                           f"recalibrate or restore it")


def _check_tables(path: Path, meta: ProfileMeta, tables: dict[str, np.ndarray], blob_bytes: int) -> None:
    shape = (meta.bins, meta.layers, meta.heads)
    expected = {
        "kept_count": (*shape, N_LEVELS),
        "retained_mean": (*shape, N_LEVELS),
        "retained_worst": (*shape, N_LEVELS),
        "head_offsets": (*shape, 2),
    }
    for name, want in expected.items():
        if tuple(tables[name].shape) != want:
            raise ProfileError(f"{path}: tensor {name!r} has shape {tuple(tables[name].shape)} but the profile "
                               f"header implies {want}; the file is inconsistent, recalibrate")
    for name in ("retained_mean", "retained_worst"):
        if np.isnan(tables[name]).any():
            raise ProfileError(f"{path}: tensor {name!r} contains NaN; the calibration produced invalid numbers, "
                               f"recalibrate")
    kept = tables["kept_count"]
    if kept.min(initial=meta.nq) < meta.nq or kept.max(initial=0) > meta.nq * meta.nk or np.any(np.diff(kept) < 0):
        raise ProfileError(f"{path}: tensor 'kept_count' is out of range; the file is corrupt, recalibrate")
    offsets = tables["head_offsets"]
    if offsets.min(initial=0) < 0 or np.any(offsets[..., 0] + offsets[..., 1] > blob_bytes):
        raise ProfileError(f"{path}: head offsets point outside the data; the file is corrupt, recalibrate")


def summarise(profile: Profile, thresholds: Iterable[float] = (0.95, 0.99, 0.999)) -> dict[str, Any]:
    """A plain-dict summary for ``calibstudio profile info`` and the studio's status line."""
    m = profile.meta
    return {
        "path": str(profile.path),
        "size_bytes": profile.path.stat().st_size,
        "model": m.model,
        "grid": {"frames": m.grid[0], "height": m.grid[1], "width": m.grid[2], "tokens": m.tokens,
                 "order": m.token_order},
        "blocks": {"query": m.block_size[0], "key": m.block_size[1], "nq": m.nq, "nk": m.nk},
        "steps": m.num_steps,
        "step_bins": [list(b) for b in m.step_bins],
        "layers": m.layers,
        "heads": m.heads,
        "threshold_range": [TAU_MIN, TAU_MAX],
        "density": {f"{t:g}": round(profile.density(t), 6) for t in thresholds},
        "calibration": m.calibration,
        "quality": m.quality,
    }

