"""Export: MP4 (H.264 through imageio-ffmpeg), PNG frames and the JSON report, each written atomically."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from calibstudio.engine.atomic import WriteError, atomic_write, writable_destination


def side_by_side(left: np.ndarray, right: np.ndarray, gap: int = 8) -> np.ndarray:
    """Two clips ``[frames, height, width, 3]`` next to each other with a dark gap."""
    if left.shape != right.shape:
        raise ValueError(f"clips differ in shape: {left.shape} vs {right.shape}")
    spacer = np.full((*left.shape[:2], gap, 3), 16, dtype=np.uint8)
    return np.concatenate([left, spacer, right], axis=2)


def check_mp4_path(path: str | os.PathLike[str]) -> Path:
    """``path`` as an MP4 destination, checked before a job runs rather than after its minutes of work."""
    path = writable_destination(path)
    if path.suffix.lower() != ".mp4":
        raise WriteError(f"cannot write {path}: the clip is written as an MP4, so name a file ending in .mp4")
    return path


def write_mp4(path: str | os.PathLike[str], frames: np.ndarray, fps: int = 16) -> Path:
    """H.264 MP4 of uint8 frames; sizes are padded to even numbers as the codec requires."""
    import imageio.v3 as iio

    pad_h, pad_w = frames.shape[1] % 2, frames.shape[2] % 2
    if pad_h or pad_w:
        frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")

    def write(tmp: Path) -> None:
        iio.imwrite(tmp, frames, plugin="FFMPEG", fps=fps, codec="libx264", macro_block_size=1)

    return atomic_write(Path(path), write)


def write_frames(folder: str | os.PathLike[str], frames: np.ndarray) -> list[Path]:
    """One PNG per frame, ``frame_0000.png`` ...; each file appears complete or not at all."""
    import imageio.v3 as iio

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return [atomic_write(folder / f"frame_{i:04d}.png", lambda tmp, f=frame: iio.imwrite(tmp, f, extension=".png"))
            for i, frame in enumerate(frames)]


def write_report(path: str | os.PathLike[str], report: dict[str, Any]) -> Path:
    """The JSON report (non-finite numbers, e.g. PSNR of identical clips, written as null)."""
    text = json.dumps(json_safe(report), indent=2) + "\n"
    return atomic_write(Path(path), lambda tmp: tmp.write_text(text))


def json_safe(value: Any) -> Any:
    """``value`` with non-finite floats as None: JSON has no inf (PSNR of identical clips) or NaN."""
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value
