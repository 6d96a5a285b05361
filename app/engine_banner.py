"""The strip that says the engine stopped, why, and offers a restart.

Shown above the views when the engine process died, hung or never started; everything else in the
window (the open profile, the threshold, finished clips and timings) stays as it was, so a restart
only brings the engine back.
"""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QPushButton, QSizePolicy, QWidget

from calibstudio.app import theme


class EngineBanner(QFrame):
    """"Engine stopped: <reason>" with Restart and Show log buttons; hidden while the engine runs."""

    restart_requested = Signal()
    log_requested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("engine_banner")
        self.setStyleSheet(f"#engine_banner {{ background: {theme.WARNING_BACKGROUND}; border-radius: 4px; }}")
        self.label = QLabel()
        self.label.setObjectName("engine_banner_text")
        self.label.setWordWrap(True)
        self.label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.restart_button = QPushButton("Restart engine")
        self.restart_button.setToolTip("Start the engine again; the profile, settings and results stay (Ctrl+Shift+R)")
        self.restart_button.clicked.connect(self.restart_requested)
        self.log_button = QPushButton("Show log")
        self.log_button.clicked.connect(self.log_requested)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(10, 6, 10, 6)
        layout.addWidget(self.label, 1)
        layout.addWidget(self.log_button)
        layout.addWidget(self.restart_button)
        self.hide()

    def show_stopped(self, reason: str) -> None:
        self.label.setText(f"<b>Engine stopped:</b> {reason}")
        self.show()
