"""Dense and sparse clips side by side: live per-step previews during a job, then synchronised playback.

While a compare runs, each side shows the engine's per-step preview of its trajectory (the same
seed, so differences are the sparse attention's). When the job finishes, the clips it wrote are
read from its folder and play in lockstep: one slider and one play button drive both, so a frame
on the left is always the same frame on the right. Quality numbers (PSNR/SSIM of sparse against
dense, measured speedup) come from the job's result and are drawn over the sparse clip.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSizePolicy,
    QSlider,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from calibstudio.app import theme
from calibstudio.app.clip_reader import DEFAULT_FPS, ClipLoader, png_to_array
from calibstudio.app.job_runner import JobRunner

SIDES = ("dense", "sparse")


def quality_text(result: dict[str, Any]) -> str:
    """One line of the quality and speed numbers a compare result carries (those it has)."""
    parts = []
    psnr = result.get("psnr")
    if isinstance(psnr, (int, float)):
        parts.append("PSNR ∞ (identical)" if math.isinf(psnr) else f"PSNR {psnr:.2f} dB")
    elif "psnr" in result:
        parts.append("PSNR ∞ (identical)")  # the report writes an infinite PSNR as null
    if isinstance(result.get("ssim"), (int, float)):
        parts.append(f"SSIM {result['ssim']:.4f}")
    if isinstance(result.get("speedup"), (int, float)):
        parts.append(f"measured {result['speedup']:.2f}×")
    if isinstance(result.get("density"), (int, float)):
        parts.append(f"density {result['density']:.1%}")
    return "  ·  ".join(parts)


class ClipView(QWidget):
    """One side: a caption and an aspect-locked image, with an optional text overlay."""

    def __init__(self, caption: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.caption = QLabel(caption)
        self.caption.setStyleSheet("font-weight: 600;")
        self.note = QLabel()
        self.note.setStyleSheet(f"color: {theme.DIM_TEXT};")
        self.note.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.graphics = pg.GraphicsLayoutWidget()
        self.view = self.graphics.addViewBox(lockAspect=True, invertY=True, enableMouse=False)
        self.view.setMenuEnabled(False)
        self.image = pg.ImageItem(axisOrder="row-major")
        self.view.addItem(self.image)
        self.empty = pg.TextItem("", color=theme.DIM_TEXT, anchor=(0.5, 0.5))
        self.view.addItem(self.empty)
        self.overlay = pg.TextItem("", color=theme.TEXT, fill=pg.mkBrush(0, 0, 0, 160), anchor=(0, 0))
        self.overlay.setZValue(10)
        self.view.addItem(self.overlay)
        self._shape: tuple[int, ...] | None = None
        header = QHBoxLayout()
        header.addWidget(self.caption)
        header.addWidget(self.note, 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(header)
        layout.addWidget(self.graphics, 1)
        self.clear("no clip yet")

    def show_image(self, image: np.ndarray) -> None:
        """Show one uint8 ``[height, width, 3]`` frame (the view refits when the size changes)."""
        self.empty.setText("")
        self.image.setImage(image, autoLevels=False, levels=(0, 255))
        if image.shape != self._shape:
            self._shape = image.shape
            self.view.setRange(xRange=(0, image.shape[1]), yRange=(0, image.shape[0]), padding=0.02)
            self.overlay.setPos(0, 0)

    def clear(self, message: str) -> None:
        self.image.clear()
        self._shape = None
        self.empty.setText(message)
        self.empty.setPos(0, 0)
        self.view.setRange(xRange=(-1, 1), yRange=(-1, 1), padding=0)
        self.set_overlay("")

    def set_overlay(self, text: str) -> None:
        self.overlay.setText(text)
        self.overlay.setVisible(bool(text))


class PreviewPanel(QWidget):
    """Both clips, one scrub slider, play/pause, frame counter and the result's quality numbers."""

    def __init__(self, runner: JobRunner | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.runner = runner
        self.views = {"dense": ClipView("Dense"), "sparse": ClipView("Sparse")}
        self.clips: dict[str, np.ndarray] = {}
        self.result: dict[str, Any] = {}
        self.fps = DEFAULT_FPS
        self.live = False
        self._previous: tuple[dict[str, np.ndarray], float, dict[str, Any]] | None = None  # back on a failed job
        self._token = 0
        self.loader = ClipLoader(self)
        self.loader.loaded.connect(self._clips_loaded)
        self.loader.failed.connect(self._clips_failed)

        self.play_button = QPushButton("▶ Play")
        self.play_button.setCheckable(True)
        self.play_button.setToolTip("Play or pause both clips together (Space)")
        self.play_button.toggled.connect(self.set_playing)
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setToolTip("Scrub both clips")
        self.slider.valueChanged.connect(self.show_frame)
        self.counter = QLabel()
        self.counter.setObjectName("frame_counter")
        self.counter.setMinimumWidth(130)
        self.quality = QLabel()
        self.quality.setObjectName("quality")
        self.quality.setStyleSheet(f"color: {theme.ACCENT}; font-weight: 600;")
        self.status = QLabel("Run a compare (Ctrl+R) to see dense and sparse clips side by side.")
        self.status.setObjectName("preview_status")
        self.status.setStyleSheet(f"color: {theme.DIM_TEXT};")
        self.status.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.export_button = QToolButton()
        self.export_button.setText("Export")
        self.export_button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        self.export_button.setToolTip("Export the clips, the profile at the chosen τ or the JSON report")

        self.timer = QTimer(self)
        self.timer.timeout.connect(self._advance)

        sides = QHBoxLayout()
        for view in self.views.values():
            sides.addWidget(view, 1)
        controls = QHBoxLayout()
        controls.addWidget(self.play_button)
        controls.addWidget(self.slider, 1)
        controls.addWidget(self.counter)
        controls.addWidget(self.export_button)
        footer = QHBoxLayout()
        footer.addWidget(self.quality)
        footer.addWidget(self.status, 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(8, 8, 8, 8)
        layout.addLayout(sides, 1)
        layout.addLayout(controls)
        layout.addLayout(footer)
        self._update_controls()

        if runner is not None:
            runner.job_started.connect(self._job_started)
            runner.preview.connect(self._preview)
            runner.job_finished.connect(self._job_finished)
            runner.job_failed.connect(lambda kind, _code, message: self._job_ended(kind, f"{kind} failed: {message}"))
            runner.job_cancelled.connect(lambda kind: self._job_ended(kind, f"{kind} cancelled"))

    # -- clips ----------------------------------------------------------------------------------------
    @property
    def frame_count(self) -> int:
        return max((len(clip) for clip in self.clips.values()), default=0)

    def set_clips(self, clips: dict[str, np.ndarray], fps: float = DEFAULT_FPS,
                  result: dict[str, Any] | None = None, missing: str = "") -> None:
        """Show finished clips (``dense`` and/or ``sparse``) for playback from frame 0.

        ``missing`` is the note shown on a side without a clip (e.g. a dense-only generation).
        """
        self.set_playing(False)
        self.live = False
        self.clips = {side: clip for side, clip in clips.items() if side in SIDES}
        self.fps = fps if fps > 0 else DEFAULT_FPS
        self.result = dict(result or {})
        text = quality_text(self.result)
        self.quality.setText(text)
        for side, view in self.views.items():
            if side in self.clips:
                clip = self.clips[side]
                view.note.setText(f"{len(clip)} frames · {clip.shape[2]}×{clip.shape[1]} · {self.fps:g} fps")
                view.show_image(clip[0])
            else:
                view.note.setText("")
                view.clear(missing or "no clip")
        self.views["sparse"].set_overlay(text.replace("  ·  ", "\n") if "sparse" in self.clips else "")
        self.slider.blockSignals(True)
        self.slider.setRange(0, max(self.frame_count - 1, 0))
        self.slider.setValue(0)
        self.slider.blockSignals(False)
        self.show_frame(0)

    def show_frame(self, index: int) -> None:
        """Show frame ``index`` on both sides (a shorter clip holds its last frame)."""
        if self.live or not self.clips:
            self._update_controls()
            return
        for side, clip in self.clips.items():
            self.views[side].show_image(clip[min(index, len(clip) - 1)])
        if self.slider.value() != index:
            self.slider.blockSignals(True)
            self.slider.setValue(index)
            self.slider.blockSignals(False)
        self._update_controls()

    def set_playing(self, playing: bool) -> None:
        """Start or pause playback of both clips (no-op without clips)."""
        playing = playing and self.frame_count > 1 and not self.live
        if playing:
            self.timer.start(max(int(round(1000 / self.fps)), 1))
        else:
            self.timer.stop()
        self.play_button.blockSignals(True)
        self.play_button.setChecked(playing)
        self.play_button.setText("❚❚ Pause" if playing else "▶ Play")
        self.play_button.blockSignals(False)

    def toggle_playing(self) -> None:
        self.set_playing(not self.timer.isActive())

    def _advance(self) -> None:
        if self.frame_count:
            self.show_frame((self.slider.value() + 1) % self.frame_count)

    def _update_controls(self) -> None:
        has_clips = bool(self.clips) and not self.live
        self.slider.setEnabled(has_clips and self.frame_count > 1)
        self.play_button.setEnabled(has_clips and self.frame_count > 1)
        if has_clips:
            self.counter.setText(f"frame {self.slider.value() + 1} / {self.frame_count}")
        elif not self.live:
            self.counter.setText("")

    # -- live previews --------------------------------------------------------------------------------
    def begin_live(self, kind: str) -> None:
        """A job started: clear the old clips and wait for its per-step previews."""
        self.set_playing(False)
        if self.clips:
            self._previous = (self.clips, self.fps, self.result)
        self.live = True
        self.clips = {}
        self.result = {}
        self.quality.setText("")
        for view in self.views.values():
            view.note.setText("")
            view.clear("waiting for the first step…" if kind == "compare" else f"{kind} running…")
        self.counter.setText("")
        self.status.setText(f"{kind} running: previews update every step" if kind == "compare" else
                            f"{kind} running: the clip appears when it is done")
        self._update_controls()

    def show_preview(self, step: int, which: str, image: np.ndarray) -> None:
        """A per-step preview of one trajectory (only while a job runs)."""
        if not self.live or which not in self.views:
            return
        self.views[which].show_image(image)
        self.views[which].note.setText(f"step {step + 1} preview")
        self.counter.setText(f"step {step + 1}")

    # -- runner events ----------------------------------------------------------------------------------
    def _job_started(self, kind: str) -> None:
        if kind in ("compare", "generate"):
            self.begin_live(kind)

    def _preview(self, step: int, which: str, data: bytes) -> None:
        try:
            image = png_to_array(data)
        except ValueError:
            self.status.setText(f"step {step + 1}: the engine's {which} preview is not a readable image")
            return
        self.show_preview(step, which, image)

    def _job_finished(self, kind: str, payload: dict) -> None:
        if kind == "compare":
            paths = {side: payload[side] for side in SIDES if isinstance(payload.get(side), str)}
        elif kind == "generate":
            request = payload.get("request")
            side = getattr(request, "mode", "dense")
            paths = {side: payload["video"]} if isinstance(payload.get("video"), str) else {}
        else:
            return
        self._token += 1
        self.result = dict(payload)
        self.status.setText(f"{kind} done in {payload.get('seconds', 0):.1f} s — reading the clips…")
        self.loader.load((self._token, kind), paths)

    def _clips_loaded(self, token: tuple[int, str], clips: dict, fps: float) -> None:
        number, kind = token
        if number != self._token:
            return  # a newer job has replaced this one
        missing = "" if kind == "compare" else f"not made by this {kind}"
        self._previous = None
        self.set_clips(clips, fps, self.result, missing=missing)
        folder = self.result.get("folder", "")
        self.status.setText(f"{kind} done in {self.result.get('seconds', 0):.1f} s · {folder}")

    def _clips_failed(self, token: tuple[int, str], message: str) -> None:
        if token[0] == self._token:
            self.live = False
            self.status.setText(message)
            self._update_controls()

    def _job_ended(self, kind: str, message: str) -> None:
        """A job failed or was cancelled: bring back the clips that were shown before it."""
        if self.live and kind in ("compare", "generate"):
            self.live = False
            if self._previous is not None:
                self.set_clips(*self._previous)
            else:
                for view in self.views.values():
                    view.clear("no clip")
                self._update_controls()
            self.status.setText(message)
