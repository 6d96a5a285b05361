"""The installed Qt binding keeps Python's reference counts straight when signals are emitted.

PySide6 6.12.0 returns ``True`` from ``SignalInstance.emit`` without a reference of its own: each
emit from Python drops one, and after a few thousand (a slider dragged for a while, a job streaming
events) the interpreter aborts with "bool_dealloc". pyproject excludes that release; this test names
the problem if such a build is installed anyway.
"""

from __future__ import annotations

import sys

import PySide6
from PySide6.QtCore import QObject, Signal


class _Emitter(QObject):
    changed = Signal(int)


def test_signal_emit_keeps_reference_counts():
    emitter = _Emitter()
    emitter.changed.connect(lambda _: None)
    before = sys.getrefcount(True)
    for i in range(50):
        emitter.changed.emit(i)
    lost = before - sys.getrefcount(True)
    assert lost < 10, (f"PySide6 {PySide6.__version__} drops a reference to True on every Signal.emit "
                       f"({lost} lost in 50 emits); the studio would abort after a few thousand events. "
                       "Install another release: pip install 'PySide6-Essentials!=6.12.0'")
