"""The studio (PySide6 + pyqtgraph). Talks to the engine only through the protocol; never imports torch.

``import calibstudio.app`` itself stays light (no Qt); :func:`main` imports the GUI when called.
"""

from __future__ import annotations

from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Run the studio (``calibstudio studio``); see :mod:`calibstudio.app.studio` for the options."""
    from calibstudio.app.studio import main as run

    return run(argv)
