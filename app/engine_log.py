"""The engine's log as the user can read it: its stderr, its log events and errors no command claimed."""

from __future__ import annotations

import time

from PySide6.QtGui import QFontDatabase
from PySide6.QtWidgets import QPlainTextEdit, QWidget

from calibstudio.app.engine_client import EngineClient

MAX_LINES = 5000


class EngineLogView(QPlainTextEdit):
    """Read-only, bounded (old lines drop off), monospaced."""

    def __init__(self, client: EngineClient, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setReadOnly(True)
        self.setMaximumBlockCount(MAX_LINES)
        self.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.setPlaceholderText("The engine's messages appear here.")
        client.stderr_line.connect(self.add)
        client.log.connect(lambda level, message: self.add(f"[{level}] {message}"))
        client.error.connect(lambda cid, code, message: self.add(f"[error {code}{' ' + cid if cid else ''}] "
                                                                 f"{message}"))
        client.state_changed.connect(lambda state: self.add(f"--- engine {state}"))
        client.stopped.connect(lambda reason: self.add(f"--- engine stopped: {reason}"))

    def add(self, line: str) -> None:
        self.appendPlainText(f"{time.strftime('%H:%M:%S')}  {line}")
