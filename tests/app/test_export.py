"""Export from the studio: in the background, whole files only, a clear message when it cannot be done."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from PySide6.QtWidgets import QMessageBox

from calibstudio.app.engine_client import EngineClient
from calibstudio.app.main_window import MainWindow
from calibstudio.app.settings import open_settings

FAKE = str(Path(__file__).with_name("fake_engine.py"))


@pytest.fixture
def compared(dark_app, qtbot, settings_file, tmp_path, small_profile):
    """A window whose (fake) engine finished one compare."""
    engine = EngineClient([sys.executable, FAKE, "ok", str(tmp_path / "jobs")])
    win = MainWindow(open_settings(settings_file), engine=engine, start_engine=True)
    win.job_panel.set_model("tiny")  # the fake engine's clip sizes follow Wan's size rule
    qtbot.addWidget(win)
    qtbot.waitUntil(lambda: engine.is_ready and not win.runner.busy, timeout=20_000)
    win.job_panel.prompt_edit.setPlainText("a red circle")
    win.job_panel.profile_edit.setText(str(small_profile))
    assert win.job_panel.run("compare")
    qtbot.waitUntil(lambda: "compare" in win.runner.results, timeout=20_000)
    return win


def test_export_actions_follow_what_exists(window, compared, small_profile):
    assert not window.exporter.actions["dense"].isEnabled() and not window.exporter.actions["profile"].isEnabled()
    assert all(compared.exporter.actions[n].isEnabled() for n in ("side_by_side", "dense", "sparse", "report"))
    assert compared.exporter.suggested_name("dense") == "a-red-circle_seed0_dense.mp4"
    window.open_profile(small_profile)
    assert window.exporter.actions["profile"].isEnabled()


def test_background_export_and_a_failed_one(compared, qtbot, tmp_path, monkeypatch):
    boxes = []
    monkeypatch.setattr(QMessageBox, "warning", lambda parent, title, text: boxes.append(text))
    messages = []
    compared.exporter.exported.connect(messages.append)
    compared.exporter.failed.connect(messages.append)
    target = tmp_path / "out" / "sparse.mp4"
    target.parent.mkdir()
    assert compared.exporter.export_to("sparse", target, wait=False) == []
    qtbot.waitUntil(lambda: bool(messages), timeout=10_000)
    assert messages == [f"Exported {target}"]
    assert target.read_bytes() == Path(compared.runner.results["compare"]["sparse"]).read_bytes()
    assert compared.settings.value("export/folder") == str(target.parent.resolve())

    messages.clear()
    assert compared.exporter.export_to("dense", tmp_path / "no-such-folder" / "dense.mp4") == []
    assert len(messages) == 1 and messages[0].startswith("Export failed") and "does not exist" in messages[0]
    assert boxes == messages  # the window shows it in a message box
    assert not (tmp_path / "no-such-folder").exists()
    assert sorted(p.name for p in target.parent.iterdir()) == ["sparse.mp4"]  # no temporary files left
