"""Export: the last job's clips (dense, sparse, side by side), the profile at the chosen τ, the JSON report.

The engine already wrote every clip and the report into the job's folder; exporting copies them
where the user wants through a temporary file and a rename (engine.atomic), so an interrupted or
failed export never leaves half a file and never clobbers an existing one with a broken copy. A
profile holds every threshold; exported "at τ" it is the profile plus ``<name>.threshold.json``
beside it, recording the chosen τ and what it gives (density, retained mass, predicted speedup),
so whoever receives the pair applies it as the user tuned it. The save dialog remembers its folder.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, QSettings, Signal
from PySide6.QtGui import QAction
from PySide6.QtWidgets import QFileDialog, QMenu, QWidget

from calibstudio.app.job_runner import JobRunner
from calibstudio.app.profile_model import ProfileModel
from calibstudio.engine.atomic import atomic_write

# name -> (menu text, file filter, suffix)
TARGETS: dict[str, tuple[str, str, str]] = {
    "side_by_side": ("Side-by-side MP4…", "MP4 video (*.mp4)", "side-by-side.mp4"),
    "dense": ("Dense clip MP4…", "MP4 video (*.mp4)", "dense.mp4"),
    "sparse": ("Sparse clip MP4…", "MP4 video (*.mp4)", "sparse.mp4"),
    "profile": ("Profile at the chosen τ…", "Calibration profiles (*.safetensors)", "profile.safetensors"),
    "report": ("JSON report…", "JSON (*.json)", "report.json"),
}
FOLDER_KEY = "export/folder"


def copy_file(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> Path:
    """Copy ``source`` to ``target`` atomically; raises WriteError (or OSError for a missing source)."""
    source = Path(source)
    if not source.is_file():
        raise FileNotFoundError(f"{source} does not exist any more (job folders are temporary)")
    return atomic_write(Path(target), lambda tmp: shutil.copyfile(source, tmp))


def threshold_note(model: ProfileModel) -> dict[str, Any]:
    """What the chosen τ does to the open profile, as recorded beside an exported profile."""
    stats = model.stats()
    if stats is None or model.profile is None:
        raise ValueError("no profile is open")
    dense = stats.speedup.dense_steps
    cli, api = (f" --dense-steps {dense}", f", dense_steps={dense}") if dense else ("", "")
    return {
        "profile": model.profile.path.name,
        "threshold": stats.requested,
        "applied_threshold": stats.applied,
        "density": stats.density,
        "retained_mass_mean": stats.mean_retained,
        "retained_mass_worst": stats.worst_retained,
        "predicted_speedup": stats.speedup.speedup,
        "dense_steps": stats.speedup.dense_steps,
        "use": f"calibstudio generate --profile {model.profile.path.name} --threshold {stats.requested:g}{cli}, "
               f"or calibstudio.apply_profile(pipe, profile, threshold={stats.requested:g}{api})",
    }


def write_profile(source: str | os.PathLike[str], note: str, target: str | os.PathLike[str]) -> list[Path]:
    """Copy the profile ``source`` to ``target`` and write ``note`` (JSON) beside it as ``<stem>.threshold.json``."""
    target = Path(target)
    note_path = target.with_name(f"{target.stem}.threshold.json")
    profile = copy_file(source, target)
    return [profile, atomic_write(note_path, lambda tmp: tmp.write_text(note))]


def slug(text: str, limit: int = 40) -> str:
    """A file-name-safe short form of a prompt."""
    words = re.sub(r"[^A-Za-z0-9]+", "-", text.lower()).strip("-")
    return words[:limit].rstrip("-") or "clip"


class Exporter(QObject):
    """The Export actions (menu and buttons) and what they copy from the last finished job.

    Signals: ``exported(message)`` after a successful export, ``failed(message)`` when it could not be done.
    """

    exported = Signal(str)
    failed = Signal(str)

    def __init__(self, settings: QSettings, runner: JobRunner, model: ProfileModel, window: QWidget) -> None:
        super().__init__(window)
        self.settings = settings
        self.model = model
        self.window = window
        self.sources: dict[str, str] = {}  # clip/report name -> file in the job folder
        self.stem = "clip"
        self.actions: dict[str, QAction] = {}
        for name, (text, _, _) in TARGETS.items():
            action = QAction(text, window)
            action.setObjectName(f"export_{name}")
            action.triggered.connect(lambda _=False, n=name: self.export(n))
            self.actions[name] = action
        self.actions["side_by_side"].setShortcut("Ctrl+E")
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="export")
        runner.job_finished.connect(self._job_finished)
        model.profile_changed.connect(self.update_enabled)
        self.update_enabled()

    def menu(self, parent: QWidget) -> QMenu:
        """A menu holding the export actions (the File menu and the preview panel's button share them)."""
        menu = QMenu("&Export", parent)
        for name in ("side_by_side", "dense", "sparse"):
            menu.addAction(self.actions[name])
        menu.addSeparator()
        menu.addAction(self.actions["profile"])
        menu.addAction(self.actions["report"])
        return menu

    def update_enabled(self) -> None:
        for name, action in self.actions.items():
            action.setEnabled(self.model.profile is not None if name == "profile" else name in self.sources)

    def _job_finished(self, kind: str, payload: dict) -> None:
        if kind == "compare":
            self.sources = {name: payload[name] for name in ("dense", "sparse", "side_by_side", "report")
                            if isinstance(payload.get(name), str)}
        elif kind == "generate" and isinstance(payload.get("video"), str):
            mode = getattr(payload.get("request"), "mode", "dense")
            self.sources = {mode: payload["video"]}
        else:
            return
        request = payload.get("request")
        self.stem = f"{slug(request.prompt)}_seed{request.seed}" if request is not None else "clip"
        self.update_enabled()

    def suggested_name(self, name: str) -> str:
        if name == "profile" and self.model.profile is not None:
            return f"{self.model.profile.path.stem}_tau{self.model.threshold:g}.safetensors"
        return f"{self.stem}_{TARGETS[name][2]}"

    def export(self, name: str) -> None:
        """Ask where (starting in the folder used last) and export ``name`` there, off the GUI thread."""
        text, file_filter, _ = TARGETS[name]
        folder = str(self.settings.value(FOLDER_KEY, str(Path.home())))
        path, _ = QFileDialog.getSaveFileName(self.window, f"Export {text.rstrip('…').lower()}",
                                              str(Path(folder) / self.suggested_name(name)), file_filter)
        if path:
            self.export_to(name, path, wait=False)

    def export_to(self, name: str, path: str | os.PathLike[str], wait: bool = True) -> list[Path]:
        """Export ``name`` to ``path`` (no dialog) and remember the folder; returns the files written.

        With ``wait=False`` the copying runs on a worker thread (a Wan-14B profile is hundreds of MB) and
        the result comes as ``exported`` or ``failed``; errors always come as ``failed`` (and ``[]``).
        """
        try:
            write = self._plan(name, Path(path))
        except ValueError as error:
            self.failed.emit(f"Export failed: {error}")
            return []
        self.settings.setValue(FOLDER_KEY, str(Path(path).resolve().parent))
        if wait:
            return self._write(write)
        self._pool.submit(self._write, write)
        return []

    def _plan(self, name: str, target: Path) -> Callable[[], list[Path]]:
        """Read what the export needs from the window's state now (GUI thread); the returned call writes."""
        if name == "profile":
            if self.model.profile is None:
                raise ValueError("no profile is open")
            source, note = self.model.profile.path, json.dumps(threshold_note(self.model), indent=2) + "\n"
            return lambda: write_profile(source, note, target)
        if name not in self.sources:
            raise ValueError(f"nothing to export as {name!r} yet: run a compare or generate first")
        source = self.sources[name]
        return lambda: [copy_file(source, target)]

    def _write(self, write: Callable[[], list[Path]]) -> list[Path]:
        try:
            written = write()
        except (OSError, ValueError) as error:  # WriteError is a ValueError
            self.failed.emit(f"Export failed: {error}")
            return []
        self.exported.emit("Exported " + ", ".join(str(p) for p in written))
        return written

    def wait(self) -> None:
        """Block until background exports are done (tests, shutdown)."""
        self._pool.submit(lambda: None).result()
