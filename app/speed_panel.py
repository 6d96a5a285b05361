"""Measured speed of a compare: per-step dense and sparse times as they arrive, and the speedup.

Every number here comes from the engine's ``timing`` events (dense step k and sparse step k run
back to back on the same machine) and, at the end, from the job's result. "Current" is the last
step's dense/sparse ratio; "overall" is total dense time over total sparse time, the number the
report records. Nothing is shown before a compare has measured it.
"""

from __future__ import annotations

import statistics
from typing import Any

import pyqtgraph as pg
from PySide6.QtWidgets import QHBoxLayout, QLabel, QSizePolicy, QVBoxLayout, QWidget

from calibstudio.app import theme
from calibstudio.app.job_runner import JobRunner

DENSE_PEN = (200, 200, 205)
SPARSE_PEN = theme.ACCENT


def speedup(dense_ms: float, sparse_ms: float) -> float:
    """dense / sparse time, guarded against a zero sparse time."""
    return dense_ms / max(sparse_ms, 1e-9)


class SpeedPanel(QWidget):
    """Live per-step plot of dense vs sparse step times, with current and overall speedup."""

    def __init__(self, runner: JobRunner | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.steps: list[int] = []
        self.dense_ms: list[float] = []
        self.sparse_ms: list[float] = []
        self.result: dict[str, Any] = {}

        self.current_label = self._big("—", "current")
        self.overall_label = self._big("—", "overall")
        self.overall_label.setStyleSheet(f"font-size: 30pt; font-weight: 700; color: {theme.ACCENT};")
        self.detail = QLabel("Run a compare (Ctrl+R): dense and sparse steps are timed back to back.")
        self.detail.setObjectName("speed_detail")
        self.detail.setWordWrap(True)
        self.detail.setStyleSheet(f"color: {theme.DIM_TEXT};")
        self.detail.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)

        self.plot = pg.PlotWidget()
        self.plot.setMenuEnabled(False)
        self.plot.setLabel("bottom", "denoising step")
        self.plot.setLabel("left", "step time (ms)")  # not units="ms": SI prefixes would make "kms"
        self.plot.showGrid(x=True, y=True, alpha=0.25)
        self.legend = QLabel(f"<span style='color:{pg.mkColor(DENSE_PEN).name()}'>━●━</span> dense &nbsp;&nbsp; "
                             f"<span style='color:{SPARSE_PEN}'>━●━</span> sparse &nbsp;&nbsp; step time in ms")
        self.dense_curve = self.plot.plot([], [], name="dense", pen=pg.mkPen(DENSE_PEN, width=2),
                                          symbol="o", symbolSize=6, symbolBrush=DENSE_PEN)
        self.sparse_curve = self.plot.plot([], [], name="sparse", pen=pg.mkPen(SPARSE_PEN, width=2),
                                           symbol="o", symbolSize=6, symbolBrush=SPARSE_PEN)

        numbers = QHBoxLayout()
        for caption, label in (("speedup, last step", self.current_label),
                               ("speedup, whole run (Σ dense / Σ sparse)", self.overall_label)):
            numbers.addLayout(theme.captioned(caption, label))
            numbers.addSpacing(32)
        numbers.addStretch(1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(8, 8, 8, 8)
        layout.addLayout(numbers)
        layout.addWidget(self.detail)
        layout.addWidget(self.legend)
        layout.addWidget(self.plot, 1)

        if runner is not None:
            runner.job_started.connect(lambda kind: self.reset() if kind == "compare" else None)
            runner.timing.connect(self.add_step)
            runner.job_finished.connect(lambda kind, payload: self.set_result(payload) if kind == "compare" else None)

    @staticmethod
    def _big(text: str, name: str) -> QLabel:
        label = QLabel(text)
        label.setObjectName(name)
        label.setStyleSheet("font-size: 30pt; font-weight: 700;")
        return label

    def reset(self) -> None:
        """A new compare: clear the plot and the numbers."""
        self.steps, self.dense_ms, self.sparse_ms, self.result = [], [], [], {}
        self.current_label.setText("—")
        self.overall_label.setText("—")
        self.detail.setText("compare running: waiting for the first timed step…")
        self._redraw()

    def add_step(self, step: int, dense_ms: float, sparse_ms: float) -> None:
        """One measured step pair (from a ``timing`` event)."""
        self.steps.append(step)
        self.dense_ms.append(dense_ms)
        self.sparse_ms.append(sparse_ms)
        self.current_label.setText(f"{speedup(dense_ms, sparse_ms):.2f}×")
        self.overall_label.setText(f"{self.overall:.2f}×")
        self.detail.setText(f"step {step + 1}: dense {dense_ms:.1f} ms, sparse {sparse_ms:.1f} ms · "
                            f"Σ dense {sum(self.dense_ms):.0f} ms, Σ sparse {sum(self.sparse_ms):.0f} ms")
        self._redraw()

    @property
    def overall(self) -> float:
        return speedup(sum(self.dense_ms), sum(self.sparse_ms))

    def set_result(self, result: dict[str, Any]) -> None:
        """The finished compare: its reported speedup and density (the same numbers as the report)."""
        self.result = dict(result)
        value = result.get("speedup")
        if isinstance(value, (int, float)):
            self.overall_label.setText(f"{value:.2f}×")
        parts = [f"{len(self.steps)} steps measured"]
        if self.steps:
            parts.append(f"Σ dense {sum(self.dense_ms):.0f} ms, Σ sparse {sum(self.sparse_ms):.0f} ms")
            # one hiccup of the machine moves the sum; the median step shows whether it was typical
            parts.append(f"median step {statistics.median(self.dense_ms):.1f} vs "
                         f"{statistics.median(self.sparse_ms):.1f} ms")
        if isinstance(result.get("density"), (int, float)):
            parts.append(f"attention density {result['density']:.1%}")
        request = result.get("request")
        if request is not None:
            parts.append(f"{request.width}×{request.height}, {request.frames} frames, τ {request.threshold:g}")
        self.detail.setText(" · ".join(parts))

    def _redraw(self) -> None:
        shown = [step + 1 for step in self.steps]  # steps count from 1 on screen, as in the progress bar
        self.dense_curve.setData(shown, self.dense_ms)
        self.sparse_curve.setData(shown, self.sparse_ms)
        spacing = max(1, round(len(shown) / 10))
        self.plot.getAxis("bottom").setTicks([[(s, str(s)) for s in shown if s % spacing == 0 or s == 1]]
                                             if shown else None)
