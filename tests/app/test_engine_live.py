"""The studio driving a real ``calibstudio engine`` subprocess on the tiny model: calibrate, one short
compare, and export of what it made. Everything checked here was measured by the engine."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("diffusers")

from calibstudio.app.engine_client import EngineClient, default_command  # noqa: E402
from calibstudio.app.main_window import MainWindow  # noqa: E402
from calibstudio.app.settings import open_settings  # noqa: E402

TIMEOUT_MS = 180_000  # generous: a loaded 2-core machine can be ten times slower than an idle one


@pytest.fixture
def live_window(dark_app, qtbot, settings_file, tmp_path):
    engine = EngineClient([*default_command(), "--jobs-dir", str(tmp_path / "jobs")])
    win = MainWindow(open_settings(settings_file), engine=engine, start_engine=True)
    win.job_panel.set_model("tiny")  # before the engine is ready: it loads tiny instead of the default
    qtbot.addWidget(win)
    win.resize(1400, 900)
    win.show()
    qtbot.waitUntil(lambda: win.engine.is_ready and win.runner.loaded_model == "tiny" and not win.runner.busy,
                    timeout=TIMEOUT_MS)
    return win


def test_calibrate_compare_and_export_on_the_tiny_model(live_window, qtbot, tmp_path):
    win, panel = live_window, live_window.job_panel
    assert (panel.width_box.value(), panel.height_box.value(), panel.frames_box.value()) == (128, 64, 9), \
        "the engine's defaults for the tiny model fill the form on first load"
    profile = tmp_path / "tiny.safetensors"
    panel.profile_edit.setText(str(profile))
    panel.block_box.setCurrentText("16")
    panel.bins_box.setValue(2)
    assert panel.error_bound_box.value() == 0.0, "the tiny model names no error bound"
    panel.error_bound_box.setValue(1e-3)  # the error pass runs through the protocol and raises some heads
    assert panel.run("calibrate")
    qtbot.waitUntil(lambda: not win.runner.busy, timeout=TIMEOUT_MS)
    assert "calibrated" in panel.message.text(), panel.message.text()
    assert win.model.profile is not None and win.model.profile.path == profile  # opened in the window
    report = win.model.profile.meta.calibration["error_bound"]
    assert report["bound"] == 1e-3 and report["floored_heads"]

    progress, previews = [], []
    win.runner.job_progress.connect(lambda *event: progress.append(event))
    win.runner.preview.connect(lambda step, which, data: previews.append((step, which, win.previews.live)))
    panel.prompt_edit.setPlainText("a red circle moves left")
    win.model.set_threshold(0.95)
    assert panel.run("compare")
    assert win.tabs.currentWidget() is win.previews and win.previews.live
    qtbot.waitUntil(lambda: not win.runner.busy, timeout=TIMEOUT_MS)
    assert "compare done" in panel.message.text(), panel.message.text()
    result = win.runner.results["compare"]

    # progress with an ETA reached the panel; every step was timed and previewed live
    assert [p[1] for p in progress if p[0] == "compare"] == [0, 1, 2, 3, 4]
    assert all(p[3] is not None for p in progress if p[0] == "compare" and p[1] > 0)
    assert win.speed.steps == [0, 1, 2, 3]
    assert all(ms > 0 for ms in win.speed.dense_ms + win.speed.sparse_ms)
    assert win.speed.overall_label.text() == f"{result['speedup']:.2f}×"
    assert sorted((s, w) for s, w, _ in previews) == sorted((s, w) for s in range(4) for w in ("dense", "sparse"))
    assert all(live for _, _, live in previews)

    # then the finished clips play side by side with the result's quality numbers
    qtbot.waitUntil(lambda: len(win.previews.clips) == 2, timeout=TIMEOUT_MS)
    assert {k: v.shape for k, v in win.previews.clips.items()} == {"dense": (9, 64, 128, 3),
                                                                   "sparse": (9, 64, 128, 3)}
    assert "SSIM" in win.previews.quality.text() and "PSNR" in win.previews.quality.text()
    win.previews.slider.setValue(5)
    assert win.previews.counter.text() == "frame 6 / 9"
    assert (win.previews.views["dense"].image.image == win.previews.clips["dense"][5]).all()
    assert (win.previews.views["sparse"].image.image == win.previews.clips["sparse"][5]).all()

    # export: copies appear whole, beside nothing half-written, and the dialog folder is remembered
    out = tmp_path / "exports"
    out.mkdir()
    video = win.exporter.export_to("side_by_side", out / "both.mp4")
    assert video and video[0].read_bytes() == open(result["side_by_side"], "rb").read()
    report = win.exporter.export_to("report", out / "report.json")
    assert json.loads(report[0].read_text())["settings"]["threshold"] == 0.95
    written = win.exporter.export_to("profile", out / "chosen.safetensors")
    note = json.loads((out / "chosen.threshold.json").read_text())
    assert [p.name for p in written] == ["chosen.safetensors", "chosen.threshold.json"]
    assert note["threshold"] == 0.95 and 0 < note["density"] <= 1
    assert sorted(p.name for p in out.iterdir()) == ["both.mp4", "chosen.safetensors", "chosen.threshold.json",
                                                     "report.json"]
    assert win.settings.value("export/folder") == str(out.resolve())
