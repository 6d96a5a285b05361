"""The threshold slider and the live numbers it moves: density, retained mass, predicted speedup.

The slider's positions are exactly the profile's quantised levels (log-spaced in 1 - τ from 0.90 to
0.9999), so every position is a threshold the profile applies as-is; the spin box accepts any value
in range and the profile snaps it up to the next level (shown as "applied").
"""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QSizePolicy,
    QSlider,
    QVBoxLayout,
    QWidget,
)

from calibstudio.app import theme
from calibstudio.app.profile_model import ProfileModel, level_threshold
from calibstudio.engine.profile import N_LEVELS, TAU_MAX, TAU_MIN, threshold_level

_DENSITY_TIP = "Share of attention blocks computed, whole model (step bins weighted by steps)"


class ThresholdSpinBox(QDoubleSpinBox):
    """A τ spin box whose arrow steps move one quantised level, like the slider."""

    def __init__(self, model: ProfileModel, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._model = model
        self.setDecimals(5)
        self.setRange(TAU_MIN, TAU_MAX)
        self.setKeyboardTracking(False)

    def stepBy(self, steps: int) -> None:  # noqa: N802 (Qt override)
        self._model.step_threshold(steps)


class ThresholdPanel(QWidget):
    """Slider + spin box for τ and the readouts that follow it."""

    def __init__(self, model: ProfileModel, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.model = model
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setRange(0, N_LEVELS - 1)
        self.slider.setPageStep(16)
        self.slider.setToolTip("Retained attention mass τ, log-spaced in 1 − τ ( [ and ] step it )")
        self.spin = ThresholdSpinBox(model)
        self.spin.setToolTip("Type a threshold in 0.90..0.9999; it snaps up to the next level the profile stores")

        ends = QHBoxLayout()
        for text, align in ((f"τ {TAU_MIN:g}  (lose 10%)", Qt.AlignmentFlag.AlignLeft),
                            (f"τ {TAU_MAX:g}  (lose 0.01%)", Qt.AlignmentFlag.AlignRight)):
            label = QLabel(text)
            label.setStyleSheet(f"color: {theme.DIM_TEXT}; font-size: 9pt;")
            ends.addWidget(label, 1, align)

        self.density_label = QLabel("—")
        self.density_label.setObjectName("density")
        self.density_label.setStyleSheet("font-size: 20pt; font-weight: 600;")
        self.density_label.setToolTip(_DENSITY_TIP)
        self.speedup_label = QLabel("—")
        self.speedup_label.setObjectName("speedup")
        self.speedup_label.setStyleSheet(f"font-size: 20pt; font-weight: 600; color: {theme.ACCENT};")
        self.retained_label = QLabel("—")
        self.retained_label.setObjectName("retained")
        self.retained_label.setToolTip("Attention mass kept on the calibration prompts: mean over bins, layers, "
                                       "heads and prompts; and the worst (bin, layer, head) on its worst prompt")
        self.worst_label = QLabel("—")
        self.worst_label.setObjectName("worst")
        self.head_label = QLabel("—")
        self.head_label.setObjectName("head")
        self.head_retained_label = QLabel("—")
        self.head_retained_label.setObjectName("head_retained")
        # short lines, no word wrap: a dock does not grow for a wrapped label, the rows would overlap
        self.applied_label = QLabel("—")
        self.applied_label.setObjectName("applied")
        self.applied_label.setStyleSheet(f"color: {theme.DIM_TEXT};")

        big = QHBoxLayout()
        for caption, label in (("density", self.density_label), ("predicted speedup", self.speedup_label)):
            big.addLayout(theme.captioned(caption, label))

        row = QHBoxLayout()
        row.addWidget(self.slider, 1)
        row.addWidget(self.spin)
        form = QFormLayout()
        form.addRow("Retained mass", self.retained_label)
        form.addRow("Worst prompt", self.worst_label)
        form.addRow("Selected head", self.head_label)
        form.addRow("  retained", self.head_retained_label)
        form.addRow("Applied τ", self.applied_label)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(8, 8, 8, 8)
        title = QLabel("Threshold τ — retained attention mass")
        title.setStyleSheet("font-weight: 600;")
        layout.addWidget(title)
        layout.addLayout(row)
        layout.addLayout(ends)
        layout.addLayout(big)
        layout.addLayout(form)
        layout.addStretch(1)

        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Maximum)  # give spare height away
        self.slider.valueChanged.connect(self._slider_moved)
        self.spin.valueChanged.connect(self.model.set_threshold)
        model.threshold_changed.connect(self._sync)
        model.dense_steps_changed.connect(self._sync)
        model.profile_changed.connect(self._sync)
        model.selection_changed.connect(self._update_head)
        self._sync()

    def _slider_moved(self, level: int) -> None:
        if level != threshold_level(self.model.threshold):
            self.model.set_threshold(level_threshold(level))

    def _sync(self, *_: object) -> None:
        """Bring controls and readouts in line with the model (without echoing back into it)."""
        level = self.model.level
        for widget, value in ((self.slider, level), (self.spin, self.model.threshold)):
            widget.blockSignals(True)
            widget.setValue(value)
            widget.blockSignals(False)
        self.applied_label.setText(f"{self.model.applied_threshold:.5f}  (lost mass ≤ "
                                   f"{100 * (1 - self.model.applied_threshold):.3g}%)")
        stats = self.model.stats()
        enabled = stats is not None
        for widget in (self.slider, self.spin):
            widget.setEnabled(enabled)
        if stats is None:
            return
        # the clip's density, as a compare reports it: the job's dense first steps count as 1
        clip, dense = stats.speedup.density, stats.speedup.dense_steps
        self.density_label.setText(f"{clip:.1%}")
        split = f"\nThe first {dense} steps run dense: {clip:.1%} over the clip, {stats.density:.1%} in the others."
        self.density_label.setToolTip(_DENSITY_TIP + (split if dense else ""))
        self.speedup_label.setText(f"{stats.speedup.speedup:.2f}×")
        self.speedup_label.setToolTip(stats.speedup.explain())
        self.retained_label.setText(f"{stats.mean_retained:.5f} mean")
        b, layer, head = stats.worst_at
        self.worst_label.setText(f"{stats.worst_retained:.5f}  (bin {b}, layer {layer}, head {head})")
        self._update_head()

    def _update_head(self, *_: object) -> None:
        stats = self.model.stats()
        if stats is None:
            return
        b, layer, head = self.model.selection
        self.head_label.setText(f"L{layer} H{head} bin {b}: {stats.densities[b, layer, head]:.1%} of blocks")
        self.head_retained_label.setText(f"{stats.retained_mean[b, layer, head]:.5f} mean, "
                                         f"{stats.retained_worst[b, layer, head]:.5f} worst")
