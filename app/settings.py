"""Persistent settings: one QSettings, with an optional file so tests never touch the user's own."""

from __future__ import annotations

from PySide6.QtCore import QSettings

ORGANISATION = "CalibAtt"
APPLICATION = "CalibAtt Studio"


def open_settings(path: str | None = None) -> QSettings:
    """The user's settings, or an INI file at ``path`` (tests, portable installs)."""
    if path:
        return QSettings(path, QSettings.Format.IniFormat)
    return QSettings(QSettings.Format.NativeFormat, QSettings.Scope.UserScope, ORGANISATION, APPLICATION)


def read_float(settings: QSettings, key: str, default: float) -> float:
    """A float setting; a missing or unreadable value gives ``default`` (INI stores strings)."""
    value = settings.value(key, default)
    try:
        return float(value)
    except (TypeError, ValueError):
        return default
