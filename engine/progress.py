"""Progress and cancellation of a job: one reporter shared by the CLI (a tqdm bar) and the server (events)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field


class Cancelled(Exception):
    """Raised at a step boundary when the job was asked to stop."""


@dataclass
class Progress:
    """Call :meth:`update` at each step; it reports (with an ETA) and raises :class:`Cancelled` on request.

    ``sink(phase, step, total, eta_seconds)`` receives every update; ``cancel()`` may be called
    from another thread, the job stops at its next step boundary.
    """

    sink: Callable[[str, int, int, float | None], None] = lambda *_: None
    _cancelled: bool = False
    _phase: str = ""
    _began: float = field(default_factory=time.perf_counter)

    def cancel(self) -> None:
        self._cancelled = True

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def update(self, phase: str, step: int, total: int) -> None:
        if self._cancelled:
            raise Cancelled(phase)
        if phase != self._phase:
            self._phase, self._began = phase, time.perf_counter()
        elapsed = time.perf_counter() - self._began
        eta = elapsed / step * (total - step) if step > 0 else None
        self.sink(phase, step, total, eta)


def tqdm_progress() -> Progress:
    """A :class:`Progress` drawing one tqdm bar per phase on stderr (the CLI's)."""
    from tqdm import tqdm

    bars: dict[str, tqdm] = {}

    def sink(phase: str, step: int, total: int, eta: float | None) -> None:
        bar = bars.get(phase)
        if bar is None or step < bar.n:  # a new phase, or the same phase again (eval runs one compare a prompt)
            for other in bars.values():
                other.close()
            bar = bars[phase] = tqdm(total=total, desc=phase, unit="step")
        bar.n = step
        bar.refresh()
        if step >= total:
            bar.close()

    return Progress(sink)
