"""Clips and preview images as numpy arrays for the views, read off the GUI thread.

The engine writes each finished clip as an H.264 MP4 in its job folder and streams per-step
previews as PNGs; the previews decode with Qt (small, on the GUI thread), the clips with imageio's
ffmpeg plugin on a worker thread, so a long clip never stalls the window.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QImage

DEFAULT_FPS = 16.0  # what engine.export.write_mp4 writes


def png_to_array(data: bytes) -> np.ndarray:
    """A PNG (or any format Qt reads) as uint8 ``[height, width, 3]``; ValueError if it is not an image."""
    image = QImage.fromData(data)
    if image.isNull():
        raise ValueError("not a readable image")
    image = image.convertToFormat(QImage.Format.Format_RGB888)
    rows = np.frombuffer(image.constBits(), dtype=np.uint8).reshape(image.height(), image.bytesPerLine())
    return rows[:, : image.width() * 3].reshape(image.height(), image.width(), 3).copy()


def read_clip(path: str | os.PathLike[str]) -> tuple[np.ndarray, float]:
    """All frames of a video file as uint8 ``[frames, height, width, 3]`` and its frame rate.

    Raises OSError naming the file when it is missing or cannot be decoded.
    """
    path = Path(path)
    if not path.is_file():
        raise OSError(f"clip {path} does not exist (was the engine on another machine?)")
    try:
        import imageio.v3 as iio

        frames = iio.imread(path, plugin="FFMPEG")
        fps = float(iio.immeta(path, plugin="FFMPEG").get("fps") or DEFAULT_FPS)
    except ImportError as error:
        raise OSError(f"cannot read {path.name}: imageio with ffmpeg is not installed ({error}); "
                      "install 'calibstudio[studio]'") from None
    except Exception as error:  # imageio raises a variety of types for a broken file
        raise OSError(f"cannot decode {path}: {error}") from None
    if frames.ndim == 3:
        frames = frames[None]
    return np.ascontiguousarray(frames[..., :3]), fps


class ClipLoader(QObject):
    """Reads a set of clips on a worker thread; ``loaded(token, clips, fps)`` or ``failed(token, message)``.

    ``token`` is whatever the caller passed to :meth:`load`, so a late answer for an older request can
    be told apart from the current one.
    """

    loaded = Signal(object, dict, float)
    failed = Signal(object, str)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="clip-reader")

    def load(self, token: object, paths: dict[str, str]) -> None:
        """Read every ``{name: path}`` clip; signals arrive on the GUI thread."""
        self._pool.submit(self._read, token, dict(paths))

    def _read(self, token: object, paths: dict[str, str]) -> None:
        try:
            clips, fps = {}, DEFAULT_FPS
            for name, path in paths.items():
                clips[name], fps = read_clip(path)
        except OSError as error:
            self.failed.emit(token, str(error))
        else:
            self.loaded.emit(token, clips, fps)

    def wait(self) -> None:
        """Block until queued reads are done (tests, shutdown)."""
        self._pool.submit(lambda: None).result()

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
