"""Dark theme for image work: Fusion with a neutral dark palette, and matching pyqtgraph defaults.

Neutral greys (no tint) so the heatmap colours are judged against a background that does not shift
them; one accent colour for selection and the mask outline.
"""

from __future__ import annotations

import pyqtgraph as pg
from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QApplication, QLabel, QVBoxLayout, QWidget

WINDOW = "#1e1f22"
BASE = "#16171a"
PANEL = "#2a2b2f"
TEXT = "#dcdde0"
DIM_TEXT = "#8b8d93"
ACCENT = "#4fc3f7"  # selection, mask outline
ERROR_TEXT = "#ff8a80"
WARNING_BACKGROUND = "#5a2a27"  # the "engine stopped" banner
MASK_OUTLINE = (124, 245, 255, 200)
MASS_COLORMAP = "inferno"
DENSITY_COLORMAP = "viridis"


def captioned(caption: str, value: QWidget) -> QVBoxLayout:
    """A readout under a small dim caption: the big numbers of the threshold and speed panels."""
    box = QVBoxLayout()
    small = QLabel(caption)
    small.setStyleSheet(f"color: {DIM_TEXT};")
    box.addWidget(small)
    box.addWidget(value)
    return box


def configure_pyqtgraph() -> None:
    """pyqtgraph defaults for every view: dark background, light axes, antialiased lines."""
    pg.setConfigOptions(background=BASE, foreground=TEXT, antialias=True)


def apply_dark_theme(app: QApplication) -> None:
    """Fusion style with a dark palette (also for disabled widgets), plus pyqtgraph defaults."""
    app.setStyle("Fusion")
    palette = QPalette()
    roles = {
        QPalette.ColorRole.Window: WINDOW,
        QPalette.ColorRole.WindowText: TEXT,
        QPalette.ColorRole.Base: BASE,
        QPalette.ColorRole.AlternateBase: PANEL,
        QPalette.ColorRole.ToolTipBase: PANEL,
        QPalette.ColorRole.ToolTipText: TEXT,
        QPalette.ColorRole.PlaceholderText: DIM_TEXT,
        QPalette.ColorRole.Text: TEXT,
        QPalette.ColorRole.Button: PANEL,
        QPalette.ColorRole.ButtonText: TEXT,
        QPalette.ColorRole.BrightText: "#ff6b6b",
        QPalette.ColorRole.Link: ACCENT,
        QPalette.ColorRole.Highlight: "#2f6f8f",
        QPalette.ColorRole.HighlightedText: "#ffffff",
        QPalette.ColorRole.Light: "#3a3b40",
        QPalette.ColorRole.Midlight: "#323338",
        QPalette.ColorRole.Mid: "#26272b",
        QPalette.ColorRole.Dark: "#121315",
        QPalette.ColorRole.Shadow: "#000000",
    }
    for role, colour in roles.items():
        palette.setColor(role, QColor(colour))
    for role in (QPalette.ColorRole.Text, QPalette.ColorRole.ButtonText, QPalette.ColorRole.WindowText):
        palette.setColor(QPalette.ColorGroup.Disabled, role, QColor(DIM_TEXT))
    app.setPalette(palette)
    app.setStyleSheet(
        f"QToolTip {{ color: {TEXT}; background-color: {PANEL}; border: 1px solid #44464c; padding: 4px; }}"
    )
    configure_pyqtgraph()
