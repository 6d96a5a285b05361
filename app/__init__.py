"""The studio (PySide6 + pyqtgraph). Talks to the engine only through the protocol; never imports torch."""
