"""Job requests and the job panel: impossible requests are stopped with a clear message before anything
is sent, buttons follow the engine, the form and τ stay in step with the window, the form is remembered."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from calibstudio.app.engine_client import EngineClient
from calibstudio.app.job_panel import format_eta
from calibstudio.app.job_request import JobRequest, validate
from calibstudio.app.main_window import MainWindow
from calibstudio.app.settings import open_settings
from calibstudio.engine.models.demo.folder import default_folder, saved_defaults

FAKE = str(Path(__file__).with_name("fake_engine.py"))


def test_validate_names_each_problem(tmp_path, small_profile):
    good = JobRequest(model="tiny", prompt="a red ball", height=64, width=128, frames=9, steps=4,
                      profile=str(small_profile))
    assert validate("compare", good) == []
    assert validate("generate", JobRequest(model="tiny", prompt="x", height=64, width=64, frames=9, mode="dense")) == []
    problems = validate("compare", JobRequest(model="tiny", prompt=" ", height=100, width=64, frames=10,
                                              profile=str(tmp_path / "missing.safetensors")))
    text = " | ".join(problems)
    assert "write a prompt" in text
    assert "height 100 is not a multiple of 16" in text
    assert "10 frames is impossible for Wan: frames must be 4k+1 (e.g. 17)" in text
    assert f"no profile at {tmp_path / 'missing.safetensors'}" in text
    assert validate("compare", JobRequest(model="demo", prompt="x", height=64, width=64, frames=16,
                                          profile=str(small_profile))) == []
    assert "frames must be a multiple of 2" in " ".join(validate("generate", JobRequest(
        model="demo", prompt="x", height=64, width=64, frames=15, mode="dense")))
    assert "neither" in validate("generate", JobRequest(model=str(tmp_path / "nope"), prompt="x", mode="dense",
                                                       height=64, width=64, frames=9))[0]
    calibrate = validate("calibrate", JobRequest(model="tiny", height=64, width=64, frames=9, steps=4, bins=5,
                                                 profile=str(tmp_path / "no-folder" / "p.safetensors")))
    assert any("does not exist" in p for p in calibrate) and any("step bins must be 1..steps (4)" in p
                                                                 for p in calibrate)
    assert validate("generate", JobRequest(model="tiny", prompt="x", height=64, width=64, frames=9,
                                           mode="sparse"))[0].startswith("generate sparse needs a calibration profile")
    assert validate("compare", JobRequest(model="tiny", prompt="x", height=64, width=64, frames=9, steps=4,
                                          dense_steps=5, profile=str(small_profile))) == [
        "dense steps must be 0..steps (4), got 5"]


def test_request_arguments_per_command(small_profile):
    request = JobRequest(model="tiny", prompt=" a ball ", seed=7, steps=4, height=64, width=128, frames=9,
                         profile=str(small_profile), threshold=0.99, mode="dense")
    assert request.args("compare") == {"prompt": "a ball", "negative_prompt": "", "seed": 7, "height": 64,
                                       "width": 128, "frames": 9, "steps": 4, "profile": str(small_profile),
                                       "threshold": 0.99, "dense_steps": 0, "compile": False}
    assert "profile" not in request.args("generate") and request.args("generate")["mode"] == "dense"
    assert request.args("calibrate")["block"] == 128 and "prompt" not in request.args("calibrate")
    assert request.args("calibrate")["error_bound"] == 0.0, "no error pass unless asked (or the model's bound)"
    assert format_eta(None) == "…" and format_eta(75.4) == "1:15" and format_eta(3725) == "1:02:05"
    assert format_eta(0.2) == "<0:01"


@pytest.fixture
def fake_window(dark_app, qtbot, settings_file, tmp_path):
    engine = EngineClient([sys.executable, FAKE, "ok", str(tmp_path / "jobs")])
    win = MainWindow(open_settings(settings_file), engine=engine, start_engine=True)
    win.job_panel.set_model("tiny")  # the fake engine's clip sizes follow Wan's size rule
    qtbot.addWidget(win)
    win.show()
    qtbot.waitUntil(lambda: engine.is_ready and not win.runner.busy, timeout=20_000)
    return win


def test_a_models_shipped_profile_is_shown_and_becomes_the_jobs_profile(dark_app, qtbot, settings_file, tmp_path,
                                                                         small_profile):
    engine = EngineClient([sys.executable, FAKE, "ok", str(tmp_path / "jobs"), str(small_profile)])
    win = MainWindow(open_settings(settings_file), engine=engine, start_engine=True)
    qtbot.addWidget(win)
    qtbot.waitUntil(lambda: engine.is_ready and not win.runner.busy, timeout=20_000)
    assert win.model.profile is not None and win.model.profile.path == small_profile
    assert win.model.threshold == 0.9, "no tau was ever chosen: the model's recommended one applies"
    assert win.job_panel.profile_edit.text() == str(small_profile)
    assert win.settings.value("recent_folder") is None, "a bundled profile's folder is not the user's folder"
    panel = win.job_panel
    panel.set_model("tiny")  # ships none: the demo's profile would not fit it
    qtbot.waitUntil(lambda: win.runner.loaded_model == "tiny" and not win.runner.busy, timeout=20_000)
    assert panel.profile_edit.text() == ""
    panel.profile_edit.setText(str(tmp_path / "mine.safetensors"))  # the user's choice is never replaced
    panel.set_model("demo")
    qtbot.waitUntil(lambda: win.runner.loaded_model == "demo" and not win.runner.busy, timeout=20_000)
    assert panel.profile_edit.text() == str(tmp_path / "mine.safetensors")


def test_a_remembered_threshold_is_kept_when_a_shipped_profile_opens(dark_app, qtbot, settings_file, tmp_path,
                                                                    small_profile):
    settings = open_settings(settings_file)
    settings.setValue("threshold", 0.99)
    engine = EngineClient([sys.executable, FAKE, "ok", str(tmp_path / "jobs"), str(small_profile)])
    win = MainWindow(settings, engine=engine, start_engine=True)
    qtbot.addWidget(win)
    qtbot.waitUntil(lambda: engine.is_ready and not win.runner.busy and win.model.profile is not None,
                    timeout=20_000)
    assert win.model.threshold == 0.99


def test_impossible_request_is_refused_with_a_message_and_nothing_is_sent(fake_window, qtbot, small_profile):
    panel = fake_window.job_panel
    panel.prompt_edit.setPlainText("a blue square")
    panel.profile_edit.setText(str(small_profile))
    panel.height_box.setValue(100)
    sent = len(fake_window.engine.stderr_tail)
    assert not panel.run("compare")
    assert panel.message.text().startswith("Cannot compare: height 100 is not a multiple of 16")
    assert "Cannot compare" in fake_window.statusBar().currentMessage()
    assert not fake_window.runner.busy
    qtbot.wait(200)
    assert not any("got compare" in line for line in list(fake_window.engine.stderr_tail)[sent:])


def test_buttons_follow_the_engine_and_threshold_follows_the_slider(fake_window, small_profile):
    panel = fake_window.job_panel
    assert all(button.isEnabled() for button in panel.buttons.values())
    fake_window.open_profile(small_profile)
    assert panel.profile_edit.text() == str(small_profile)  # the open profile is the job's profile
    fake_window.threshold.slider.setValue(10)
    assert panel.threshold_box.value() == pytest.approx(fake_window.model.threshold, abs=1e-5)
    panel.threshold_box.setValue(0.99)
    assert fake_window.model.threshold == pytest.approx(0.99)
    assert panel.request().threshold == pytest.approx(0.99)
    fake_window.engine.stop()
    assert not any(button.isEnabled() for button in panel.buttons.values())
    assert not panel.run("compare") and "engine is not running" in panel.message.text()


def test_typing_in_the_form_is_not_taken_by_window_shortcuts(window, qtbot):
    """Space (play/pause), Esc (cancel) and [ ] (threshold) are window shortcuts; text fields keep their keys."""
    prompt = window.job_panel.prompt_edit
    prompt.setFocus()
    level = window.model.level
    qtbot.keyClicks(prompt, "a [red] ball")
    assert prompt.toPlainText() == "a [red] ball" and window.model.level == level


def test_form_is_remembered_between_sessions(dark_app, qtbot, settings_file, small_profile):
    first = MainWindow(open_settings(settings_file), persist=True)
    qtbot.addWidget(first)
    panel = first.job_panel
    panel.prompt_edit.setPlainText("a green triangle grows")
    panel.seed_box.setValue(1234)
    panel.frames_box.setValue(17)
    panel.profile_edit.setText(str(small_profile))
    panel.mode_box.setCurrentText("dense")
    panel.error_bound_box.setValue(0.08)
    panel.compile_box.setChecked(True)
    first.close()
    second = MainWindow(open_settings(settings_file), persist=False)
    qtbot.addWidget(second)
    restored = second.job_panel.request()
    assert (restored.prompt, restored.seed, restored.frames, restored.profile, restored.mode, restored.error_bound,
            restored.compile) == ("a green triangle grows", 1234, 17, str(small_profile), "dense", 0.08, True)
    assert restored.args("generate")["compile"] is True


def test_a_first_session_asks_for_the_bundled_models_clip_before_the_engine_answers(window):
    """A job sent before the model has loaded gets the clip the bundled model was made for, not a generic size."""
    shipped = saved_defaults(default_folder())
    request = window.job_panel.request()
    assert (request.model, request.height, request.width, request.frames, request.steps, request.dense_steps) == (
        "demo", shipped["height"], shipped["width"], shipped["frames"], shipped["steps"], shipped["dense_steps"])
    assert (request.frames, request.dense_steps) == (32, 5)  # the shipped v4, not the 16-frame form of v1
    assert window.model.dense_steps == shipped["dense_steps"]  # and the predicted speedup counts its dense steps


def test_dense_first_steps_feed_the_request_and_the_prediction(fake_window):
    fake_window.job_panel.dense_steps_box.setValue(3)
    assert fake_window.job_panel.request().dense_steps == 3
    assert fake_window.model.dense_steps == 3  # the predicted speedup counts them
