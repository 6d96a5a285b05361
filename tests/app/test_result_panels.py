"""The previews and speed panels on their own: synchronised playback and scrubbing, the quality line,
live speedup from timed steps."""

from __future__ import annotations

import numpy as np
import pytest

from calibstudio.app.preview_panel import PreviewPanel, quality_text
from calibstudio.app.speed_panel import SpeedPanel


def clip(frames: int, value: int) -> np.ndarray:
    out = np.zeros((frames, 8, 12, 3), dtype=np.uint8)
    out[:, :, :, 0] = value + np.arange(frames)[:, None, None]
    return out


def test_one_slider_and_one_play_button_drive_both_clips(dark_app, qtbot):
    panel = PreviewPanel()
    qtbot.addWidget(panel)
    panel.show()
    assert not panel.play_button.isEnabled() and not panel.slider.isEnabled()
    panel.set_clips({"dense": clip(6, 0), "sparse": clip(4, 100)}, fps=50, result={"psnr": 31.25, "ssim": 0.9})
    assert panel.counter.text() == "frame 1 / 6" and panel.slider.maximum() == 5
    panel.slider.setValue(3)
    assert panel.views["dense"].image.image[0, 0, 0] == 3 and panel.views["sparse"].image.image[0, 0, 0] == 103
    panel.slider.setValue(5)  # the shorter clip holds its last frame
    assert panel.views["sparse"].image.image[0, 0, 0] == 103
    panel.set_playing(True)
    assert panel.play_button.isChecked() and panel.play_button.text().startswith("❚❚")
    qtbot.waitUntil(lambda: panel.slider.value() == 1, timeout=3000)  # wrapped around from the last frame
    assert panel.views["dense"].image.image[0, 0, 0] == 1
    panel.toggle_playing()
    assert not panel.timer.isActive()
    assert "PSNR 31.25 dB" in panel.quality.text() and "SSIM 0.9000" in panel.quality.text()
    assert "PSNR 31.25 dB" in panel.views["sparse"].overlay.toPlainText()


def test_quality_line_reads_only_what_the_result_has():
    assert quality_text({}) == ""
    assert quality_text({"psnr": None, "ssim": 1.0}) == "PSNR ∞ (identical)  ·  SSIM 1.0000"
    assert quality_text({"speedup": 1.234, "density": 0.25}) == "measured 1.23×  ·  density 25.0%"


def test_speed_panel_shows_last_step_and_overall_speedup(dark_app, qtbot):
    panel = SpeedPanel()
    qtbot.addWidget(panel)
    assert panel.overall_label.text() == "—"
    panel.reset()
    panel.add_step(0, 30.0, 10.0)
    panel.add_step(1, 10.0, 10.0)
    assert panel.current_label.text() == "1.00×"
    assert panel.overall_label.text() == "2.00×" and panel.overall == pytest.approx(2.0)
    x, y = panel.sparse_curve.getData()
    assert list(x) == [1, 2] and list(y) == [10.0, 10.0]
    panel.set_result({"speedup": 1.95, "density": 0.4})
    assert panel.overall_label.text() == "1.95×" and "attention density 40.0%" in panel.detail.text()
