"""Small multiples: every head of the selected layer and bin side by side, dropped blocks dimmed.

Shows at a glance which heads are local, which are temporal stripes and which are nearly dense.
Images are pre-coloured RGB (one colour-table lookup per head and layer change); a threshold change
only re-applies the dimming, so the slider stays live. Hidden, the view defers all work until shown.
"""

from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPointF, Signal
from PySide6.QtGui import QShowEvent
from PySide6.QtWidgets import QLabel, QVBoxLayout, QWidget

from calibstudio.app import theme
from calibstudio.app.mask_graphics import colour_table, dim_dropped, mass_rgb
from calibstudio.app.profile_model import ProfileModel


def grid_columns(count: int, aspect: float = 1.5) -> int:
    """Columns for ``count`` tiles in a roughly ``aspect``-wide area, preferring no empty tiles."""
    guess = max(1, round(math.sqrt(count * aspect)))
    candidates = [c for c in (guess, guess - 1, guess + 1) if c >= 1]
    return min(candidates, key=lambda c: (-count % c, abs(c - guess)))


class SmallMultiplesView(QWidget):
    """All heads of one layer; click selects a head, double-click also asks to open it."""

    head_activated = Signal(int)

    def __init__(self, model: ProfileModel, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.model = model
        self.graphics = pg.GraphicsLayoutWidget()
        self.graphics.ci.setSpacing(4)
        self.caption = QLabel()
        self.caption.setObjectName("caption")
        self.caption.setStyleSheet(f"color: {theme.DIM_TEXT};")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addWidget(self.caption)
        layout.addWidget(self.graphics, 1)
        self._table = colour_table(theme.MASS_COLORMAP)
        self._tiles: list[tuple[pg.LabelItem, pg.ViewBox, pg.ImageItem]] = []
        self._base: list[np.ndarray] = []
        self._levels: list[np.ndarray] = []
        self._shown: tuple[int, int] | None = None  # (bin, layer) whose images are loaded
        self._dirty = True
        self._labels: dict[int, tuple[str, bool]] = {}
        self._pen = pg.mkPen("#3a3b40", width=1)
        self._selected_pen = pg.mkPen(theme.ACCENT, width=2)

        self.graphics.scene().sigMouseClicked.connect(self._clicked)
        model.profile_changed.connect(self._on_profile)
        model.selection_changed.connect(lambda *_: self._changed())
        model.threshold_changed.connect(lambda *_: self._changed())
        if model.profile is not None:
            self._on_profile()

    def _on_profile(self) -> None:
        self.graphics.clear()
        self._tiles = []
        self._labels = {}
        self._shown = None
        heads = self.model.profile.meta.heads
        columns = grid_columns(heads)
        for head in range(heads):
            row, col = divmod(head, columns)
            label = self.graphics.addLabel(f"H{head}", row=2 * row, col=col, size="9pt", color=theme.TEXT)
            box = self.graphics.addViewBox(row=2 * row + 1, col=col, lockAspect=True, enableMouse=False,
                                           invertY=True, enableMenu=False)
            image = pg.ImageItem(axisOrder="row-major")
            box.addItem(image)
            self._tiles.append((label, box, image))
        self._changed()

    def _changed(self) -> None:
        self._dirty = True
        if self.isVisible():
            self.refresh()

    def showEvent(self, event: QShowEvent) -> None:  # noqa: N802 (Qt override)
        super().showEvent(event)
        if self._dirty:
            self.refresh()

    def refresh(self) -> None:
        """Load the layer's heads if the (bin, layer) changed, then re-apply the mask and labels."""
        self._dirty = False
        stats = self.model.stats()
        if stats is None or not self._tiles:
            return
        b, layer, selected = self.model.selection
        if self._shown != (b, layer):
            maps = [self.model.heatmap(b, layer, h) for h in range(len(self._tiles))]
            self._base = [mass_rgb(m.mass, self._table) for m in maps]
            self._levels = [m.entry_level for m in maps]
            self._shown = (b, layer)
            for (_, box, _), base in zip(self._tiles, self._base, strict=True):
                box.setRange(xRange=(0, base.shape[1]), yRange=(0, base.shape[0]), padding=0.0)
        level = self.model.level
        for head, ((label, box, image), base, levels) in enumerate(zip(self._tiles, self._base, self._levels,
                                                                       strict=True)):
            # RGB uint8 with no levels: pyqtgraph hands it to QImage without rescaling (the cheap path)
            image.setImage(dim_dropped(base, levels <= level), autoLevels=False)
            chosen = head == selected
            text = f"H{head}  {stats.densities[b, layer, head]:.1%}"
            if (text, chosen) != self._labels.get(head):  # setText re-lays out HTML: skip when unchanged
                self._labels[head] = (text, chosen)
                label.setText(text, color=theme.ACCENT if chosen else theme.TEXT, size="9pt", bold=chosen)
                box.setBorder(self._selected_pen if chosen else self._pen)
        self.caption.setText(f"Layer {layer}, bin {b}: all {len(self._tiles)} heads at τ = "
                             f"{self.model.applied_threshold:.5f} (dropped blocks dimmed). "
                             f"Click a head to select it, double-click to open it.")

    def head_at(self, scene_pos: QPointF) -> int | None:
        """The head whose tile contains a scene position."""
        for head, (_, box, _) in enumerate(self._tiles):
            if box.sceneBoundingRect().contains(scene_pos):
                return head
        return None

    def _clicked(self, event) -> None:
        head = self.head_at(event.scenePos())
        if head is None:
            return
        self.model.select(head=head)
        if event.double():
            self.head_activated.emit(head)
