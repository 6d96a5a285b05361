"""Panels that need the engine (jobs, previews, speed): clearly marked, with no fake data.

They say what will be there and why it is not yet, so a screenshot never suggests numbers that no
engine measured. Replaced one by one when the engine client lands.
"""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel, QVBoxLayout, QWidget

from calibstudio.app import theme

ENGINE_MISSING = "Engine not connected — {what} comes with the engine."


class EnginePlaceholder(QWidget):
    """A panel reserved for an engine feature: a title and one line of why it is empty."""

    def __init__(self, title: str, what: str, detail: str = "", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName(f"placeholder:{title}")
        heading = QLabel(title)
        heading.setStyleSheet("font-weight: 600; font-size: 11pt;")
        message = QLabel(ENGINE_MISSING.format(what=what))
        message.setObjectName("message")
        message.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(12, 12, 12, 12)
        layout.addStretch(1)
        for label in (heading, message):
            label.setAlignment(Qt.AlignmentFlag.AlignCenter)
            layout.addWidget(label)
        if detail:
            more = QLabel(detail)
            more.setWordWrap(True)
            more.setAlignment(Qt.AlignmentFlag.AlignCenter)
            more.setStyleSheet(f"color: {theme.DIM_TEXT};")
            layout.addWidget(more)
        layout.addStretch(2)


def job_panel() -> EnginePlaceholder:
    return EnginePlaceholder("Jobs", "generation",
                             "Model, prompt, seed, steps, size; calibrate / generate / compare with progress and "
                             "cancel. Heatmaps and the threshold work on a profile file without it.")


def previews_panel() -> EnginePlaceholder:
    return EnginePlaceholder("Previews", "the dense vs sparse preview",
                             "Dense and sparse clips side by side with synchronised playback and PSNR/SSIM.")


def speed_panel() -> EnginePlaceholder:
    return EnginePlaceholder("Speed", "measured speed",
                             "Per-step dense and sparse times and the live speedup. Until then the threshold "
                             "panel shows a predicted speedup from a documented cost model.")
