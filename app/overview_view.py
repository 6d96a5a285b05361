"""Overview matrix: density of every layer (rows) × head (columns) of the selected step bin.

The colour scale is fixed per profile (0 to the densest head at τ = 0.9999), so colours stay
comparable while the slider moves. A click opens that head in the heatmap (through the model).
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPointF
from PySide6.QtWidgets import QGraphicsRectItem, QLabel, QVBoxLayout, QWidget

from calibstudio.app import theme
from calibstudio.app.profile_model import ProfileModel
from calibstudio.engine.profile import TAU_MAX


def _centre_ticks(count: int, target: int = 16) -> list[tuple[float, str]]:
    """Labels at cell centres, thinned to about ``target`` of them (1, 2, 5, 10, ... apart)."""
    step = next(s for s in (1, 2, 5, 10, 20, 50, 100, 10**9) if count / s <= target)
    return [(i + 0.5, str(i)) for i in range(0, count, step)]


class OverviewView(QWidget):
    """Layer × head density matrix; click a cell to select that head."""

    def __init__(self, model: ProfileModel, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.model = model
        self.graphics = pg.GraphicsLayoutWidget()
        self.plot = self.graphics.addPlot()
        self.plot.setLabel("bottom", "head")
        self.plot.setLabel("left", "layer")
        self.plot.invertY(True)
        self.plot.setMenuEnabled(False)
        self.plot.setMouseEnabled(x=False, y=False)
        self.plot.hideButtons()
        self.image = pg.ImageItem(axisOrder="row-major")
        self.image.setColorMap(pg.colormap.get(theme.DENSITY_COLORMAP))
        self.plot.addItem(self.image)
        self.cursor = QGraphicsRectItem(0, 0, 1, 1)
        self.cursor.setPen(pg.mkPen(theme.ACCENT, width=2.5, cosmetic=True))
        self.cursor.setZValue(10)
        self.plot.addItem(self.cursor)
        self.colour_bar = pg.ColorBarItem(values=(0, 1), colorMap=theme.DENSITY_COLORMAP, label="density",
                                          interactive=False, colorMapMenu=False)
        self.colour_bar.setImageItem(self.image, insert_in=self.plot)
        self.caption = QLabel()
        self.caption.setObjectName("caption")
        self.caption.setWordWrap(True)
        self.caption.setStyleSheet(f"color: {theme.DIM_TEXT};")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addWidget(self.graphics, 1)
        layout.addWidget(self.caption)
        self._levels = (0.0, 1.0)

        self.graphics.scene().sigMouseClicked.connect(self._clicked)
        self.graphics.scene().sigMouseMoved.connect(self._hover)
        model.profile_changed.connect(self._on_profile)
        model.threshold_changed.connect(self.refresh)
        model.selection_changed.connect(self.refresh)
        if model.profile is not None:
            self._on_profile()

    def _on_profile(self) -> None:
        profile = self.model.profile
        top = float(profile.densities(TAU_MAX).max())
        self._levels = (0.0, max(top, 1e-3))
        self.colour_bar.setLevels(self._levels)
        meta = profile.meta
        self.plot.setRange(xRange=(0, meta.heads), yRange=(0, meta.layers), padding=0.01)
        # ticks at cell centres: cell (layer, head) covers [head, head+1] x [layer, layer+1]
        self.plot.getAxis("bottom").setTicks([_centre_ticks(meta.heads)])
        self.plot.getAxis("left").setTicks([_centre_ticks(meta.layers)])
        self.refresh()

    def matrix(self) -> np.ndarray | None:
        """Density ``[layers, heads]`` of the selected bin at the current threshold."""
        stats = self.model.stats()
        return None if stats is None else stats.densities[self.model.selection[0]]

    def refresh(self, *_: object) -> None:
        """Redraw the matrix, the cursor and the caption (a lookup: cheap on every slider tick)."""
        values = self.matrix()
        if values is None:
            return
        self.image.setImage(values.astype(np.float32), autoLevels=False, levels=self._levels)
        self.image.setRect(0, 0, values.shape[1], values.shape[0])
        b, layer, head = self.model.selection
        self.cursor.setRect(head, layer, 1, 1)
        self.caption.setText(f"Density per layer × head, bin {b}, τ = {self.model.applied_threshold:.5f}: "
                             f"mean {values.mean():.1%}, range {values.min():.1%}–{values.max():.1%}. "
                             f"Click a cell to open that head.")

    def cell_at(self, scene_pos: QPointF) -> tuple[int, int] | None:
        """(layer, head) under a scene position, or None outside the matrix."""
        values = self.matrix()
        if values is None or not self.plot.sceneBoundingRect().contains(scene_pos):
            return None
        point = self.plot.vb.mapSceneToView(scene_pos)
        layer, head = int(np.floor(point.y())), int(np.floor(point.x()))
        if 0 <= layer < values.shape[0] and 0 <= head < values.shape[1]:
            return layer, head
        return None

    def scene_pos_of(self, layer: int, head: int) -> QPointF:
        """Scene position of the centre of a cell (for tests and keyboard focus)."""
        return self.plot.vb.mapViewToScene(QPointF(head + 0.5, layer + 0.5))

    def _clicked(self, event) -> None:
        cell = self.cell_at(event.scenePos())
        if cell is not None:
            self.model.select(layer=cell[0], head=cell[1])

    def _hover(self, scene_pos: QPointF) -> None:
        cell = self.cell_at(scene_pos)
        stats = self.model.stats()
        if cell is None or stats is None:
            self.graphics.setToolTip("")
            return
        layer, head = cell
        b = self.model.selection[0]
        self.graphics.setToolTip(f"layer {layer}, head {head}: density {stats.densities[b, layer, head]:.1%}, "
                                 f"retained {stats.retained_mean[b, layer, head]:.5f} mean / "
                                 f"{stats.retained_worst[b, layer, head]:.5f} worst")
