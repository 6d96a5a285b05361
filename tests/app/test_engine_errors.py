"""The studio when the engine misbehaves (a fake engine on the real protocol): crash mid-job, garbage
output, slow start, hang, a command that cannot run; and the normal path of a compare and a cancel."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from PySide6.QtCore import Qt

from calibstudio.app.engine_client import EngineClient
from calibstudio.app.main_window import MainWindow
from calibstudio.app.settings import open_settings

FAKE = str(Path(__file__).with_name("fake_engine.py"))


def fake_client(scenario: str, jobs: Path, **timeouts: float) -> EngineClient:
    return EngineClient([sys.executable, FAKE, scenario, str(jobs)], **timeouts)


@pytest.fixture
def make_window(dark_app, qtbot, settings_file, tmp_path):
    def make(scenario: str, **timeouts: float) -> MainWindow:
        win = MainWindow(open_settings(settings_file), engine=fake_client(scenario, tmp_path / "jobs", **timeouts),
                         start_engine=True)
        win.job_panel.set_model("tiny")  # the fake engine's clip sizes follow Wan's size rule
        qtbot.addWidget(win)
        win.resize(1400, 900)
        win.show()
        return win

    return make


@pytest.fixture
def standalone(dark_app):
    """Clients with no window: stopped at teardown, so no engine process outlives its test."""
    clients: list[EngineClient] = []
    yield clients.append
    for client in clients:
        client.stop(timeout_ms=1000)


def fill_compare(win: MainWindow, profile: Path, prompt: str) -> None:
    panel = win.job_panel
    panel.prompt_edit.setPlainText(prompt)
    panel.profile_edit.setText(str(profile))


def wait_ready_and_idle(qtbot, win: MainWindow) -> None:
    qtbot.waitUntil(lambda: win.engine.is_ready and not win.runner.busy, timeout=20_000)


def test_compare_then_crash_mid_job_shows_banner_and_restart_keeps_everything(make_window, qtbot, small_profile):
    win = make_window("ok")
    assert win.open_profile(small_profile)
    win.model.select(layer=2, head=1)
    wait_ready_and_idle(qtbot, win)  # the panel's model was preloaded on ready
    assert win.runner.loaded_model == "tiny"

    fill_compare(win, small_profile, "a red circle")
    assert win.job_panel.run("compare")
    qtbot.waitUntil(lambda: len(win.previews.clips) == 2, timeout=20_000)
    assert win.speed.steps == [0, 1, 2, 3] and win.speed.overall_label.text() == "2.00×"
    finished_clips = {k: v.copy() for k, v in win.previews.clips.items()}

    fill_compare(win, small_profile, "crash now")
    assert win.job_panel.run("compare")
    qtbot.waitUntil(lambda: win.banner.isVisible(), timeout=20_000)
    text = win.banner.label.text()
    assert "Engine stopped" in text and "exited with code 3" in text and "simulated crash" in text
    assert "compare failed (engine_stopped)" in win.job_panel.message.text()
    assert not any(b.isEnabled() for b in win.job_panel.buttons.values())
    assert not win.job_panel.cancel_button.isEnabled()
    # the window kept the profile, its selection and the last finished results
    assert win.model.profile.path == small_profile and win.model.selection[1:] == (2, 1)
    assert set(win.previews.clips) == {"dense", "sparse"}
    assert all((win.previews.clips[k] == finished_clips[k]).all() for k in finished_clips)
    assert win.speed.steps == [0, 1]  # the steps timed before the crash stay on the plot

    qtbot.mouseClick(win.banner.restart_button, Qt.MouseButton.LeftButton)
    wait_ready_and_idle(qtbot, win)
    assert not win.banner.isVisible()
    assert all(b.isEnabled() for b in win.job_panel.buttons.values())
    assert win.model.profile.path == small_profile
    assert win.job_panel.profile_edit.text() == str(small_profile)


def test_garbage_output_is_reported_and_the_app_keeps_running(make_window, qtbot):
    win = make_window("garbage")
    qtbot.waitUntil(lambda: "Engine error" in win.statusBar().currentMessage() or
                    "malformed" in win.engine_log.toPlainText(), timeout=20_000)
    wait_ready_and_idle(qtbot, win)
    log = win.engine_log.toPlainText()
    assert "[error malformed]" in log and "not valid JSON" in log and "not valid UTF-8" in log
    assert "[error unknown_event]" in log
    assert win.engine.is_ready and not win.banner.isVisible()
    assert win.runner.loaded_model == "tiny"  # commands after the garbage were served


def test_slow_start_times_out_with_a_message(make_window, qtbot):
    win = make_window("slow", start_timeout_s=1.0)
    qtbot.waitUntil(lambda: win.banner.isVisible(), timeout=10_000)
    assert "did not start within 1 s" in win.banner.label.text()
    assert win.engine.state == "stopped"
    assert not any(b.isEnabled() for b in win.job_panel.buttons.values())
    assert "engine stopped" in win.job_panel.progress_label.text()


def test_hung_engine_is_detected_by_ping(standalone, qtbot, tmp_path):
    client = fake_client("hang", tmp_path, ping_interval_s=0.1, ping_timeout_s=0.5)
    standalone(client)
    stopped = []
    client.stopped.connect(stopped.append)
    client.start()
    qtbot.waitUntil(lambda: bool(stopped), timeout=20_000)
    assert "did not answer for 0.5 s" in stopped[0]
    assert client.state == "stopped" and any("got hello" in line for line in client.stderr_tail)


def test_a_command_that_cannot_run_says_so(standalone, qtbot, tmp_path):
    client = EngineClient([str(tmp_path / "no-such-engine")])
    standalone(client)
    stopped = []
    client.stopped.connect(stopped.append)
    client.start()
    qtbot.waitUntil(lambda: bool(stopped), timeout=10_000)
    assert "could not run" in stopped[0] and "no-such-engine" in stopped[0]


def test_escape_cancels_the_running_job(make_window, qtbot, small_profile):
    win = make_window("ok")
    wait_ready_and_idle(qtbot, win)
    fill_compare(win, small_profile, "a slow compare")
    assert win.job_panel.run("compare")
    assert win.job_panel.cancel_button.isEnabled() and not win.job_panel.buttons["compare"].isEnabled()
    qtbot.waitUntil(lambda: bool(win.speed.steps), timeout=20_000)
    win.heatmap.setFocus()
    qtbot.keyClick(win, Qt.Key.Key_Escape)
    qtbot.waitUntil(lambda: not win.runner.busy, timeout=20_000)
    assert any(line.startswith("got cancel") and win.runner.results.get("compare") is None
               for line in win.engine.stderr_tail)
    assert "compare cancelled" in win.job_panel.message.text()
    assert win.job_panel.buttons["compare"].isEnabled() and not win.job_panel.cancel_button.isEnabled()
