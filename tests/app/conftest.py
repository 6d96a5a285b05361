"""Shared fixtures for the studio tests: offscreen Qt, small synthetic profiles, temporary settings."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # before any Qt import: tests never need a display

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from calibstudio.engine.synthetic import write_synthetic_profile  # noqa: E402

SMALL = {"grid": (4, 16, 16), "layers": 4, "heads": 4, "bins": 2, "steps": 8, "block": 32}
# Wan-2.1-1.3B's layer and head counts (30 x 12) and 2 bins on a smaller token grid: the slider's
# per-tick work scales with layers x heads for the tables and with the block count for the shown heads.
MEDIUM = {"grid": (4, 16, 32), "layers": 30, "heads": 12, "bins": 2, "steps": 20, "block": 32}


@pytest.fixture(scope="session")
def small_profile(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("profiles") / "small.safetensors"
    return write_synthetic_profile(path, **SMALL, seed=1)


@pytest.fixture(scope="session")
def other_profile(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("profiles") / "other.safetensors"
    return write_synthetic_profile(path, grid=(2, 8, 16), layers=3, heads=2, bins=1, steps=4, block=16, seed=2)


@pytest.fixture(scope="session")
def medium_profile(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("profiles") / "medium.safetensors"
    return write_synthetic_profile(path, **MEDIUM, seed=3)


@pytest.fixture
def corrupt_profile(tmp_path, small_profile) -> Path:
    """A real profile cut in half: the kind of file a failed copy leaves behind."""
    data = small_profile.read_bytes()
    path = tmp_path / "corrupt.safetensors"
    path.write_bytes(data[: len(data) // 2])
    return path


@pytest.fixture
def settings_file(tmp_path) -> str:
    return str(tmp_path / "settings.ini")


@pytest.fixture
def dark_app(qapp):
    from calibstudio.app.theme import apply_dark_theme

    apply_dark_theme(qapp)
    return qapp


@pytest.fixture
def window(dark_app, qtbot, settings_file):
    from calibstudio.app.main_window import MainWindow
    from calibstudio.app.settings import open_settings

    win = MainWindow(open_settings(settings_file))
    qtbot.addWidget(win)
    win.resize(1400, 900)
    win.show()
    qtbot.waitExposed(win)
    return win
