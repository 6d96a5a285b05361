"""Job state: which job runs, which model the engine holds, and the results of finished jobs.

Views never talk to the engine: the job panel asks a :class:`JobRunner` to start or cancel a job,
and the previews, speed panel and export follow its signals. A job whose model is not the one the
engine holds is preceded by a ``load_model`` job, shown as the job's "load" phase. Finished results
stay here when the engine stops, so a restart loses nothing the user has already seen.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from PySide6.QtCore import QObject, Signal

from calibstudio.app.engine_client import EngineClient
from calibstudio.app.job_request import KINDS, JobRequest


@dataclass
class RunningJob:
    """The job the engine works on; ``then`` is the user's job waiting behind a model load."""

    kind: str  # "load_model" or one of KINDS
    id: str
    request: JobRequest | None
    then: tuple[str, JobRequest] | None = None
    cancelling: bool = False
    started: float = field(default_factory=time.monotonic)

    @property
    def user_kind(self) -> str:
        """What the user asked for: the waiting job when this is the model load in front of it."""
        return self.then[0] if self.then else self.kind


class JobRunner(QObject):
    """Starts jobs on an :class:`EngineClient` and turns its events into job-level signals.

    Signals: ``busy_changed(bool)``, ``job_started(kind)``, ``job_progress(phase, step, total, eta)``,
    ``job_finished(kind, payload)``, ``job_failed(kind, code, message)``, ``job_cancelled(kind)``,
    ``model_loaded(spec, defaults)``, and for compares ``timing(step, dense_ms, sparse_ms)`` and
    ``preview(step, which, png_bytes)``. ``kind`` is always what the user asked for.
    """

    busy_changed = Signal(bool)
    job_started = Signal(str)
    job_progress = Signal(str, int, int, object)
    job_finished = Signal(str, dict)
    job_failed = Signal(str, str, str)
    job_cancelled = Signal(str)
    model_loaded = Signal(str, dict)
    timing = Signal(int, float, float)
    preview = Signal(int, str, object)

    def __init__(self, client: EngineClient, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.client = client
        self.current: RunningJob | None = None
        self.loaded_model: str | None = None
        self.model_defaults: dict[str, Any] = {}
        self.results: dict[str, dict[str, Any]] = {}  # last finished payload per kind
        client.progress.connect(self._progress)
        client.timing.connect(self._timing)
        client.preview.connect(self._preview)
        client.result.connect(self._result)
        client.error.connect(self._error)
        client.stopped.connect(self._engine_stopped)
        client.ready.connect(self._engine_ready)

    @property
    def busy(self) -> bool:
        return self.current is not None

    # -- starting and cancelling ----------------------------------------------------------------------
    def start(self, kind: str, request: JobRequest) -> bool:
        """Start a ``kind`` job (after a model load if needed); False if busy or the engine is not ready."""
        if kind not in KINDS:
            raise ValueError(f"unknown job kind {kind!r}; expected one of {', '.join(KINDS)}")
        if self.busy or not self.client.is_ready:
            return False
        if request.model != self.loaded_model:
            self._send("load_model", None, then=(kind, request), model=request.model)
        else:
            self._send(kind, request, **request.args(kind))
        self.busy_changed.emit(True)
        self.job_started.emit(kind)
        return True

    def preload(self, model: str) -> bool:
        """Load ``model`` now (while the user writes a prompt); False if busy, not ready or already loaded."""
        if self.busy or not self.client.is_ready or not model or model == self.loaded_model:
            return False
        self._send("load_model", None, model=model)
        self.busy_changed.emit(True)
        self.job_started.emit("load_model")
        return True

    def cancel(self) -> bool:
        """Ask the engine to stop the running job at its next step; False if nothing runs."""
        if self.current is None or not self.client.is_ready:
            return False
        self.current.cancelling = True
        self.client.send("cancel", job=self.current.id)
        return True

    def _send(self, kind: str, request: JobRequest | None, then: tuple[str, JobRequest] | None = None,
              **args: Any) -> None:
        job_id = self.client.send(kind, **args)
        self.current = RunningJob(kind, job_id, request, then)

    def _end(self) -> RunningJob | None:
        job, self.current = self.current, None
        self.busy_changed.emit(False)
        return job

    def _mine(self, job_id: str) -> bool:
        return self.current is not None and job_id == self.current.id

    # -- engine events --------------------------------------------------------------------------------
    def _progress(self, job_id: str, phase: str, step: int, total: int, eta: float | None) -> None:
        if self._mine(job_id):
            self.job_progress.emit(phase, step, total, eta)

    def _timing(self, job_id: str, step: int, dense_ms: float | None, sparse_ms: float | None) -> None:
        if self._mine(job_id) and dense_ms is not None and sparse_ms is not None:
            self.timing.emit(step, float(dense_ms), float(sparse_ms))

    def _preview(self, job_id: str, step: int, which: str, data: bytes, _width: int, _height: int) -> None:
        if self._mine(job_id):
            self.preview.emit(step, which, data)

    def _result(self, job_id: str, payload: dict) -> None:
        if not self._mine(job_id):
            return
        job = self.current
        assert job is not None
        if job.kind == "load_model":
            self.loaded_model = str(payload.get("model", ""))
            self.model_defaults = dict(payload.get("defaults", {}))
            self.model_loaded.emit(self.loaded_model, self.model_defaults)
            if job.then is not None and job.cancelling:  # the load won the race with the cancel
                self._end()
                self.job_cancelled.emit(job.user_kind)
                return
            if job.then is not None:
                kind, request = job.then
                self._send(kind, request, **request.args(kind))
                return
            self._end()
            self.job_finished.emit("load_model", payload)
            return
        self._end()
        payload = {**payload, "request": job.request, "seconds": time.monotonic() - job.started}
        self.results[job.kind] = payload
        self.job_finished.emit(job.kind, payload)

    def _error(self, job_id: str, code: str, message: str) -> None:
        if not self._mine(job_id):
            return
        job = self._end()
        assert job is not None
        if job.kind == "load_model":
            self.loaded_model = None
        if code == "cancelled":
            self.job_cancelled.emit(job.user_kind)
        else:
            self.job_failed.emit(job.user_kind, code, message)

    def _engine_stopped(self, reason: str) -> None:
        self.loaded_model = None  # the next engine process starts empty
        if self.current is not None:
            job = self._end()
            assert job is not None
            self.job_failed.emit(job.user_kind, "engine_stopped", f"the engine stopped during {job.user_kind}: "
                                                                  f"{reason}")

    def _engine_ready(self, _info: dict) -> None:
        self.loaded_model = None
