"""Heatmap of one head's block attention mass, with the threshold's mask and a hover readout.

Rows are query blocks (top = first), columns key blocks; colour is log10 of the block mass on a
fixed 1e-6..1 scale so heads and thresholds compare at a glance. The mask at the current threshold
is drawn as an outline (crisp at any zoom) and/or by dimming the dropped blocks.
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPointF, Qt
from PySide6.QtGui import QShowEvent
from PySide6.QtWidgets import QCheckBox, QComboBox, QHBoxLayout, QLabel, QSizePolicy, QSpinBox, QVBoxLayout, QWidget

from calibstudio.app import theme
from calibstudio.app.mask_graphics import LOG_MASS_MAX, LOG_MASS_MIN, log_mass, mask_outline
from calibstudio.app.profile_model import ProfileModel
from calibstudio.app.token_grid import block_span
from calibstudio.engine.profile import NEVER, THRESHOLDS, HeadMap, ProfileMeta


def block_readout(meta: ProfileMeta, head_map: HeadMap, query: int, key: int, level: int) -> str:
    """One line describing block (query, key): where both blocks lie in the video, its mass, and
    whether the mask at quantised ``level`` keeps it (and from which threshold on)."""
    def where(block: int, size: int) -> str:
        try:
            return block_span(meta.grid, size, block, meta.token_order).describe()
        except ValueError:
            return "?"

    mass = float(head_map.mass[query, key])
    entry = int(head_map.entry_level[query, key])
    mass_text = f"{mass:.3g}" if mass > 0 else "negligible"
    if entry == NEVER:
        status = "dropped at every τ ≤ 0.9999"
    else:
        since = "kept at every τ" if entry == 0 else f"kept from τ > {THRESHOLDS[entry - 1]:.5f}"
        status = ("KEPT" if entry <= level else "dropped") + f" ({since})"
    return (f"query block {query} [{where(query, meta.block_size[0])}]  ·  key block {key} "
            f"[{where(key, meta.block_size[1])}]  ·  mass {mass_text}  ·  {status}")


class HeatmapView(QWidget):
    """Block-mass heatmap of the model's selected (bin, layer, head), with its own selectors."""

    def __init__(self, model: ProfileModel, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.model = model
        self._head_map: HeadMap | None = None
        self._dirty = True

        self.bin_box = QComboBox()
        self.bin_box.setToolTip("Step bin: denoising steps that share one mask (PgUp / PgDn)")
        self.layer_box = QSpinBox()
        self.layer_box.setToolTip("Layer (Up / Down)")
        self.head_box = QSpinBox()
        self.head_box.setToolTip("Head (Left / Right)")
        self.outline_check = QCheckBox("Mask outline")
        self.outline_check.setChecked(True)
        self.outline_check.setToolTip("Outline the blocks kept at the current threshold (M)")
        self.dim_check = QCheckBox("Dim dropped")
        self.dim_check.setToolTip("Darken the blocks the threshold drops")
        self.title = QLabel()
        self.title.setStyleSheet(f"color: {theme.DIM_TEXT};")
        # long status text must not set the window's minimum width: it is clipped when narrow
        self.title.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)

        bar = QHBoxLayout()
        for label, widget in (("Bin", self.bin_box), ("Layer", self.layer_box), ("Head", self.head_box)):
            bar.addWidget(QLabel(label))
            bar.addWidget(widget)
            bar.addSpacing(8)
        bar.addWidget(self.outline_check)
        bar.addWidget(self.dim_check)
        bar.addStretch(1)

        self.graphics = pg.GraphicsLayoutWidget()
        self.plot = self.graphics.addPlot()
        self.plot.setLabel("bottom", "key block")
        self.plot.setLabel("left", "query block")
        self.plot.invertY(True)
        self.plot.setAspectLocked(True)
        self.plot.showGrid(x=False, y=False)
        self.plot.setMenuEnabled(False)
        self.image = pg.ImageItem(axisOrder="row-major")
        self.image.setColorMap(pg.colormap.get(theme.MASS_COLORMAP))
        self.image.setLevels((LOG_MASS_MIN, LOG_MASS_MAX))
        self.plot.addItem(self.image)
        self.dim_image = pg.ImageItem(axisOrder="row-major")  # RGBA overlay over dropped blocks
        self.dim_image.setZValue(5)
        self.plot.addItem(self.dim_image)
        self.outline = pg.PlotCurveItem(connect="pairs", pen=pg.mkPen(theme.MASK_OUTLINE, width=1))
        self.outline.setZValue(10)
        self.plot.addItem(self.outline)
        self.colour_bar = pg.ColorBarItem(values=(LOG_MASS_MIN, LOG_MASS_MAX), colorMap=theme.MASS_COLORMAP,
                                          label="block mass", interactive=False, colorMapMenu=False)
        self.colour_bar.setImageItem(self.image, insert_in=self.plot)
        self.colour_bar.axis.setTicks([[(v, "1" if v == 0 else f"1e{v:d}")
                                        for v in range(int(LOG_MASS_MIN), int(LOG_MASS_MAX) + 1)]])

        self.readout = QLabel("Hover over the heatmap for a block's position, mass and mask status.")
        self.readout.setObjectName("readout")
        self.readout.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.readout.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addLayout(bar)
        layout.addWidget(self.title)
        layout.addWidget(self.graphics, 1)
        layout.addWidget(self.readout)

        self.bin_box.currentIndexChanged.connect(lambda i: self.model.select(bin_index=i) if i >= 0 else None)
        self.layer_box.valueChanged.connect(lambda v: self.model.select(layer=v))
        self.head_box.valueChanged.connect(lambda v: self.model.select(head=v))
        self.outline_check.toggled.connect(self._update_mask)
        self.dim_check.toggled.connect(self._update_mask)
        self.graphics.scene().sigMouseMoved.connect(self._hover)
        model.profile_changed.connect(self._on_profile)
        model.selection_changed.connect(self._on_selection)
        model.threshold_changed.connect(self._on_threshold)
        if model.profile is not None:
            self._on_profile()
            self._on_selection(*model.selection)

    # -- model -> view ------------------------------------------------------------------------------------
    def _on_profile(self) -> None:
        meta = self.model.profile.meta
        for widget in (self.bin_box, self.layer_box, self.head_box):
            widget.blockSignals(True)
        self.bin_box.clear()
        self.bin_box.addItems([f"{b}: steps {start}–{end - 1}" for b, (start, end) in enumerate(meta.step_bins)])
        self.layer_box.setRange(0, meta.layers - 1)
        self.head_box.setRange(0, meta.heads - 1)
        for widget in (self.bin_box, self.layer_box, self.head_box):
            widget.blockSignals(False)
        self.plot.setLimits(xMin=-0.5 * meta.nk, xMax=1.5 * meta.nk, yMin=-0.5 * meta.nq, yMax=1.5 * meta.nq)
        self._head_map = None
        self._dirty = True

    def _on_selection(self, bin_index: int, layer: int, head: int) -> None:
        for widget, value in ((self.layer_box, layer), (self.head_box, head)):
            widget.blockSignals(True)
            widget.setValue(value)
            widget.blockSignals(False)
        self.bin_box.blockSignals(True)
        self.bin_box.setCurrentIndex(bin_index)
        self.bin_box.blockSignals(False)
        self._dirty = True
        if self.isVisible():
            self.refresh()

    def _on_threshold(self, _: float) -> None:
        if self.isVisible():
            self._update_mask()
            self._update_title()
        else:
            self._dirty = True

    def showEvent(self, event: QShowEvent) -> None:  # noqa: N802 (Qt override)
        """Views that are hidden skip work; catch up when shown."""
        super().showEvent(event)
        if self._dirty:
            self.refresh()

    def refresh(self) -> None:
        """Reload the selected head and redraw everything."""
        self._dirty = False
        if self.model.profile is None:
            return
        meta = self.model.profile.meta
        self._head_map = self.model.heatmap(*self.model.selection)
        self.image.setImage(log_mass(self._head_map.mass), autoLevels=False, levels=(LOG_MASS_MIN, LOG_MASS_MAX))
        self.image.setRect(0, 0, meta.nk, meta.nq)
        self.plot.setRange(xRange=(0, meta.nk), yRange=(0, meta.nq), padding=0.02)
        self._update_mask()
        self._update_title()

    def _update_mask(self) -> None:
        if self._head_map is None:
            return
        mask = self._head_map.entry_level <= self.model.level
        if self.outline_check.isChecked():
            x, y = mask_outline(mask)
            self.outline.setData(x, y, connect="pairs")
        else:
            self.outline.setData([], [])
        self.outline.setVisible(self.outline_check.isChecked())
        if self.dim_check.isChecked():
            overlay = np.zeros((*mask.shape, 4), dtype=np.uint8)
            overlay[~mask] = (10, 10, 14, 190)
            self.dim_image.setImage(overlay, autoLevels=False, levels=(0, 255))
            self.dim_image.setRect(0, 0, mask.shape[1], mask.shape[0])
            self.dim_image.setVisible(True)
        else:
            self.dim_image.setVisible(False)

    def _update_title(self) -> None:
        stats = self.model.stats()
        if stats is None:
            return
        b, layer, head = self.model.selection
        floor = self.model.profile.meta.threshold_floors.get((b, layer, head), 0.0)
        raised = "" if floor <= stats.applied else " (dense: error bound)" if floor >= 1.0 else (
            f" (raised to {floor:.5f} by the error bound)")
        self.title.setText(f"Layer {layer}, head {head}, bin {b} at τ {stats.applied:.5f}{raised}: "
                           f"keeps {stats.densities[b, layer, head]:.1%} of blocks  ·  retained mass "
                           f"{stats.retained_mean[b, layer, head]:.5f} mean, "
                           f"{stats.retained_worst[b, layer, head]:.5f} worst prompt")
        self.title.setToolTip(self.title.text())

    # -- hover ----------------------------------------------------------------------------------------------
    def readout_at(self, key: int, query: int) -> str | None:
        """Readout text for block (query, key) of the shown head, or None outside the heatmap."""
        if self._head_map is None:
            return None
        nq, nk = self._head_map.mass.shape
        if not (0 <= query < nq and 0 <= key < nk):
            return None
        return block_readout(self.model.profile.meta, self._head_map, query, key, self.model.level)

    def _hover(self, scene_pos: QPointF) -> None:
        if not self.plot.sceneBoundingRect().contains(scene_pos):
            return
        point = self.plot.vb.mapSceneToView(scene_pos)
        text = self.readout_at(int(np.floor(point.x())), int(np.floor(point.y())))
        if text is not None:
            self.readout.setText(text)

    def toggle_outline(self) -> None:
        """Keyboard shortcut target (M)."""
        self.outline_check.toggle()
