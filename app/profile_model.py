"""The one holder of the open profile, the threshold and the selected (bin, layer, head).

Views never own data: they read from a :class:`ProfileModel` and subscribe to its signals. Every
number the slider moves is a table lookup in the profile, so :meth:`ProfileModel.stats` is cheap and
can run on every slider tick; heads are decompressed lazily and kept in a small LRU cache.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PySide6.QtCore import QObject, Signal

from calibstudio.app.cost_model import SpeedupEstimate, estimate
from calibstudio.engine.profile import (
    N_LEVELS,
    TAU_MAX,
    TAU_MIN,
    THRESHOLDS,
    HeadMap,
    Profile,
    ProfileError,
    threshold_level,
)

DEFAULT_THRESHOLD = 0.999
HEAD_CACHE_SIZE = 96


@dataclass(frozen=True)
class ThresholdStats:
    """What the threshold does to the whole model and to the selected head."""

    requested: float
    applied: float
    level: int
    densities: np.ndarray  # [bins, layers, heads]
    retained_mean: np.ndarray  # [bins, layers, heads]
    retained_worst: np.ndarray  # [bins, layers, heads]
    density: float  # whole model, bins weighted by their steps
    mean_retained: float  # mean over bins, layers, heads of the mean over prompts
    worst_retained: float  # the worst (bin, layer, head) on its worst prompt
    worst_at: tuple[int, int, int]  # where that worst is
    speedup: SpeedupEstimate


def clamp_threshold(threshold: float) -> float:
    """Keep a threshold inside the range every profile supports."""
    return float(min(max(threshold, TAU_MIN), TAU_MAX))


def level_threshold(level: int) -> float:
    """The threshold of quantised level ``level`` (0..N_LEVELS-1), clamped to the supported range."""
    return clamp_threshold(float(THRESHOLDS[min(max(level, 0), N_LEVELS - 1)]))


class ProfileModel(QObject):
    """Open profile + threshold + selection, with change signals.

    Signals: ``profile_changed()`` after a profile is opened (selection and stats are valid by then),
    ``threshold_changed(float)`` with the requested threshold, ``selection_changed(bin, layer, head)``,
    ``dense_steps_changed(int)`` when the job's dense first steps change (they change the prediction).
    """

    profile_changed = Signal()
    threshold_changed = Signal(float)
    selection_changed = Signal(int, int, int)
    dense_steps_changed = Signal(int)

    def __init__(self, threshold: float = DEFAULT_THRESHOLD, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._profile: Profile | None = None
        self._threshold = clamp_threshold(threshold)
        self._selection = (0, 0, 0)
        self._dense_steps = 0
        self._heads: OrderedDict[tuple[int, int, int], HeadMap] = OrderedDict()
        self._stats: ThresholdStats | None = None

    # -- profile -----------------------------------------------------------------------------------------
    @property
    def profile(self) -> Profile | None:
        return self._profile

    def open(self, path: str | os.PathLike[str]) -> Profile:
        """Open ``path`` and make it current. On :class:`ProfileError` the previous profile stays."""
        profile = Profile.open(Path(path))
        self.set_profile(profile)
        return profile

    def set_profile(self, profile: Profile) -> None:
        """Make ``profile`` current, keeping the selection where it still fits."""
        previous = self._profile
        self._profile = profile
        self._heads.clear()
        self._stats = None
        m = profile.meta
        b, layer, head = self._selection
        self._selection = (min(b, m.bins - 1), min(layer, m.layers - 1), min(head, m.heads - 1))
        if previous is not None and previous is not profile:
            previous.close()
        self.profile_changed.emit()
        self.selection_changed.emit(*self._selection)

    # -- threshold ---------------------------------------------------------------------------------------
    @property
    def threshold(self) -> float:
        """The requested threshold; the profile applies :attr:`applied_threshold` (>= it)."""
        return self._threshold

    @property
    def level(self) -> int:
        return threshold_level(self._threshold)

    @property
    def applied_threshold(self) -> float:
        return float(THRESHOLDS[self.level])

    def set_threshold(self, threshold: float) -> None:
        """Change the threshold (clamped to the supported range); emits only on a change."""
        threshold = clamp_threshold(threshold)
        if threshold == self._threshold:
            return
        self._threshold = threshold
        self._stats = None
        self.threshold_changed.emit(threshold)

    def step_threshold(self, levels: int) -> None:
        """Move the threshold by ``levels`` quantised levels (the slider's own steps)."""
        self.set_threshold(level_threshold(self.level + levels))

    # -- dense first steps -------------------------------------------------------------------------------
    @property
    def dense_steps(self) -> int:
        """How many first steps of a sparse clip run dense (the job panel's field); the prediction counts them."""
        return self._dense_steps

    def set_dense_steps(self, steps: int) -> None:
        steps = max(0, int(steps))
        if steps == self._dense_steps:
            return
        self._dense_steps = steps
        self._stats = None
        self.dense_steps_changed.emit(steps)

    # -- selection ---------------------------------------------------------------------------------------
    @property
    def selection(self) -> tuple[int, int, int]:
        """(step bin, layer, head) shown in the heatmap."""
        return self._selection

    def select(self, bin_index: int | None = None, layer: int | None = None, head: int | None = None) -> None:
        """Select a (bin, layer, head); ``None`` keeps that part; values are clamped to the profile."""
        b, old_layer, old_head = self._selection
        new = (b if bin_index is None else bin_index, old_layer if layer is None else layer,
               old_head if head is None else head)
        if self._profile is not None:
            m = self._profile.meta
            new = tuple(min(max(v, 0), n - 1) for v, n in zip(new, (m.bins, m.layers, m.heads), strict=True))
        if new != self._selection:
            self._selection = new  # type: ignore[assignment]
            self.selection_changed.emit(*self._selection)

    def move_selection(self, layers: int = 0, heads: int = 0, bins: int = 0) -> None:
        """Step the selection (keyboard navigation); stops at the edges."""
        b, layer, head = self._selection
        self.select(b + bins, layer + layers, head + heads)

    # -- data ----------------------------------------------------------------------------------------------
    def heatmap(self, bin_index: int, layer: int, head: int) -> HeadMap:
        """One head's block mass and entry levels (cached: moving the slider never re-reads the file)."""
        if self._profile is None:
            raise ProfileError("no profile is open")
        key = (bin_index, layer, head)
        cached = self._heads.get(key)
        if cached is not None:
            self._heads.move_to_end(key)
            return cached
        head_map = self._profile.heatmap(*key)
        self._heads[key] = head_map
        while len(self._heads) > HEAD_CACHE_SIZE:
            self._heads.popitem(last=False)
        return head_map

    def stats(self) -> ThresholdStats | None:
        """Densities, retained mass and predicted speedup at the current threshold (cached per threshold)."""
        if self._profile is None:
            return None
        if self._stats is None:
            p = self._profile
            densities = p.densities(self._threshold)
            mean, worst = p.retained(self._threshold)
            density = p.density(self._threshold)
            worst_at = tuple(int(i) for i in np.unravel_index(int(np.argmin(worst)), worst.shape))
            self._stats = ThresholdStats(
                requested=self._threshold, applied=self.applied_threshold, level=self.level,
                densities=densities, retained_mean=mean, retained_worst=worst, density=density,
                mean_retained=float(mean.mean()), worst_retained=float(worst[worst_at]),
                worst_at=worst_at,  # type: ignore[arg-type]
                speedup=estimate(p.meta.tokens, p.density(self._threshold, self._dense_steps), p.meta.model,
                                 self._dense_steps),
            )
        return self._stats
