"""The studio's one line to the engine: a child process speaking the JSON-lines protocol.

:class:`EngineClient` starts ``python -m calibstudio engine`` (or a user-set command such as
``ssh gpu-box calibstudio engine --remote``) as a QProcess, writes commands, decodes every stdout
line with the protocol's own decoder and re-emits each event as a Qt signal; payloads (preview
PNGs, masks) arrive already read, whether they came as a file path or inline. It watches the
process: an exit, a failed start, no ``ready`` within the start timeout or no answer to a ping
within the ping timeout each end in one :attr:`EngineClient.stopped` signal with a sentence that
says why. It never restarts on its own, so the user sees what happened and chooses to restart.
"""

from __future__ import annotations

import io
import logging
import secrets
import shlex
import sys
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

import numpy as np
from PySide6.QtCore import QObject, QProcess, QSettings, QTimer, Signal

from calibstudio.app.settings import read_float
from calibstudio.engine.protocol import MAX_LINE_BYTES, Command, Event, OversizedLine, decode_event, encode

log = logging.getLogger("calibstudio.app.engine")

START_TIMEOUT_S = 60.0  # an ssh hop and a cold Python start can take a while; ready needs no torch import
PING_INTERVAL_S = 5.0
PING_TIMEOUT_S = 30.0  # the engine reads commands on its main thread, so it answers even while a job runs
STDERR_LINES = 400

STOPPED, STARTING, READY = "stopped", "starting", "ready"


def default_command() -> list[str]:
    """The local engine: this interpreter running ``calibstudio engine`` (no PATH lookup needed)."""
    return [sys.executable, "-m", "calibstudio", "engine"]


def parse_command(text: str) -> list[str]:
    """A user-set engine command line (e.g. ``ssh gpu calibstudio engine --remote``) split as a shell would.

    Raises ValueError with the reason when it cannot be split or is empty.
    """
    try:
        parts = shlex.split(text)
    except ValueError as error:
        raise ValueError(f"cannot read the engine command {text!r}: {error}") from None
    if not parts:
        raise ValueError("the engine command is empty")
    return parts


def engine_state_text(client: EngineClient) -> str:
    """The engine's state in words: "ready", "starting", "stopped" (it failed: see last_reason) or "off"."""
    if client.state == STOPPED and not client.last_reason:
        return "off"
    return client.state


class EngineClient(QObject):
    """A running (or stopped) engine process and the signals its events become.

    Signals carry plain Python values: ``progress(job, phase, step, total, eta or None)``,
    ``timing(job, step, dense_ms, sparse_ms)``, ``preview(job, step, which, png_bytes, width, height)``,
    ``mask(id, array)``, ``result(id, payload)``, ``error(id or "", code, message)``, ``cancelled(job)``,
    ``log(level, message)`` for the engine's log events, ``stderr_line(text)`` for its stderr,
    ``ready(info)`` once it has started, ``state_changed(state)`` and ``stopped(reason)`` when it
    ended without being asked to.
    """

    state_changed = Signal(str)
    ready = Signal(dict)
    stopped = Signal(str)
    progress = Signal(str, str, int, int, object)
    timing = Signal(str, int, object, object)
    preview = Signal(str, int, str, object, int, int)
    mask = Signal(str, object)
    result = Signal(str, dict)
    error = Signal(str, str, str)
    cancelled = Signal(str)
    log = Signal(str, str)
    stderr_line = Signal(str)

    def __init__(self, command: Sequence[str] | None = None, *, start_timeout_s: float = START_TIMEOUT_S,
                 ping_interval_s: float = PING_INTERVAL_S, ping_timeout_s: float = PING_TIMEOUT_S,
                 max_line_bytes: int = MAX_LINE_BYTES, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.command = list(command or default_command())
        self.start_timeout_s = start_timeout_s
        self.ping_timeout_s = ping_timeout_s
        self.max_line_bytes = max_line_bytes
        self.info: dict[str, Any] = {}
        self.last_reason = ""
        self.stderr_tail: deque[str] = deque(maxlen=STDERR_LINES)
        self._state = STOPPED
        self._process: QProcess | None = None
        self._stdout = bytearray()
        self._stderr = bytearray()
        self._skipping = 0  # bytes of an oversized line dropped so far (0: not skipping)
        self._session = secrets.token_hex(3)  # ids stay unique across restarts (the engine refuses reused job ids)
        self._counter = 0
        self._ping: tuple[str, float] | None = None
        self._start_timer = QTimer(self)
        self._start_timer.setSingleShot(True)
        self._start_timer.timeout.connect(self._start_timed_out)
        self._ping_timer = QTimer(self)
        self._ping_timer.setInterval(int(ping_interval_s * 1000))
        self._ping_timer.timeout.connect(self._ping_tick)

    @classmethod
    def from_settings(cls, settings: QSettings, parent: QObject | None = None) -> EngineClient:
        """A client for the command in ``engine/command`` (empty: the local engine) and the timeouts in
        ``engine/start_timeout_s`` and ``engine/ping_timeout_s``; an unreadable command falls back to local."""
        text = str(settings.value("engine/command", "") or "")
        try:
            command = parse_command(text) if text.strip() else None
        except ValueError as error:
            log.warning("%s; using the local engine", error)
            command = None
        return cls(command, start_timeout_s=read_float(settings, "engine/start_timeout_s", START_TIMEOUT_S),
                   ping_timeout_s=read_float(settings, "engine/ping_timeout_s", PING_TIMEOUT_S), parent=parent)

    # -- state -----------------------------------------------------------------------------------------
    @property
    def state(self) -> str:
        """``"stopped"``, ``"starting"`` (process up, no ``ready`` yet) or ``"ready"``."""
        return self._state

    @property
    def is_ready(self) -> bool:
        return self._state == READY

    def _set_state(self, state: str) -> None:
        if state != self._state:
            self._state = state
            self.state_changed.emit(state)

    def describe_command(self) -> str:
        return shlex.join(self.command)

    # -- lifecycle -------------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the engine process (no-op if one is running); ``ready`` or ``stopped`` follows."""
        if self._process is not None:
            return
        process = QProcess(self)
        process.setProgram(self.command[0])
        process.setArguments(self.command[1:])
        # bound slots, not lambdas holding the process and the client: a lambda makes a reference cycle
        # through the C++ connection that the garbage collector may break mid-event (a segfault)
        process.readyReadStandardOutput.connect(self._stdout_ready)
        process.readyReadStandardError.connect(self._stderr_ready)
        process.finished.connect(self._finished)
        process.errorOccurred.connect(self._error_occurred)
        self._process = process
        self._stdout.clear()
        self._stderr.clear()
        self._skipping = 0
        self._ping = None
        self.info = {}
        self.last_reason = ""
        self._set_state(STARTING)
        log.info("starting engine: %s", self.describe_command())
        self._start_timer.start(int(self.start_timeout_s * 1000))
        process.start()

    def stop(self, timeout_ms: int = 3000) -> None:
        """Ask the engine to shut down (it cancels a running job), then kill it if it does not exit in time."""
        process = self._detach()
        if process is None:
            return
        if process.state() == QProcess.ProcessState.Running:
            try:
                process.write(encode(Command("shutdown", self._next_id("shutdown"))))
            except RuntimeError:
                pass
            process.closeWriteChannel()
        self._dispose(process, grace_ms=timeout_ms)

    def restart(self) -> None:
        """Stop whatever runs (quickly: it may be hung) and start afresh."""
        self.stop(timeout_ms=1000)
        self.start()

    def _detach(self) -> QProcess | None:
        """Forget the current process so that its late signals are ignored; returns it."""
        process, self._process = self._process, None
        self._start_timer.stop()
        self._ping_timer.stop()
        self._ping = None
        return process

    def _fail(self, reason: str) -> None:
        """The engine ended or is unusable: kill what is left and say why (once)."""
        process = self._detach()
        if process is None:
            return
        self.last_reason = reason
        self._dispose(process)
        log.warning("engine stopped: %s", reason)
        self.stopped.emit(reason)

    def _dispose(self, process: QProcess, grace_ms: int = 0) -> None:
        """Kill ``process`` unless it exits within ``grace_ms``, free it, and say the client is stopped."""
        if process.state() != QProcess.ProcessState.NotRunning and not process.waitForFinished(grace_ms):
            process.kill()
            process.waitForFinished(1000)
        process.deleteLater()
        self._set_state(STOPPED)

    def _start_timed_out(self) -> None:
        if self._state == STARTING:
            self._fail(f"it did not start within {self.start_timeout_s:g} s (no 'ready' from "
                       f"`{self.describe_command()}`)")

    def _from_current(self) -> bool:
        """Whether the signal being handled comes from the current process (a killed one's late signals don't)."""
        return self._process is not None and self.sender() is self._process

    def _finished(self, code: int, status: QProcess.ExitStatus) -> None:
        if not self._from_current():
            return
        try:
            self._read_stdout()  # its last words may still be in the pipe
            self._read_stderr()
        except RuntimeError:  # the client itself is being destroyed (interpreter exit): nobody is listening
            return
        if self._stderr:
            self._emit_stderr(self._stderr.decode("utf-8", "replace"))
            self._stderr.clear()
        if status == QProcess.ExitStatus.CrashExit:
            reason = "the engine process crashed"
        else:
            reason = f"the engine process exited with code {code}"
        last = next((line for line in reversed(self.stderr_tail) if line.strip()), "")
        self._fail(f"{reason}: {last.strip()}" if last else reason)

    def _error_occurred(self, error: QProcess.ProcessError) -> None:
        if self._from_current() and error == QProcess.ProcessError.FailedToStart:
            self._fail(f"could not run `{self.describe_command()}`: {self._process.errorString()}")

    # -- sending ---------------------------------------------------------------------------------------
    def _next_id(self, name: str) -> str:
        self._counter += 1
        return f"{name}-{self._session}-{self._counter}"

    def send(self, name: str, **args: Any) -> str:
        """Send command ``name`` with ``args``; returns its id (the job name for jobs).

        Raises RuntimeError when the engine is not ready and ValueError for a malformed command.
        """
        if self._process is None or self._state != READY:
            raise RuntimeError(f"the engine is not running (state: {self._state}); cannot send {name}")
        command_id = self._next_id(name)
        self._process.write(encode(Command(name, command_id, args)))
        return command_id

    def _ping_tick(self) -> None:
        if self._process is None or self._state != READY:
            return
        if self._ping is not None:
            if time.monotonic() - self._ping[1] > self.ping_timeout_s:
                self._fail(f"it did not answer for {self.ping_timeout_s:g} s and looks hung")
            return
        self._ping = (self.send("hello"), time.monotonic())

    # -- receiving -------------------------------------------------------------------------------------
    def _stdout_ready(self) -> None:
        if self._from_current():
            self._read_stdout()

    def _stderr_ready(self) -> None:
        if self._from_current():
            self._read_stderr()

    def _read_stdout(self) -> None:
        process = self._process
        self._stdout += bytes(process.readAllStandardOutput().data())
        for line in self._lines():
            self._dispatch(decode_event(line, max_bytes=self.max_line_bytes))
            if process is not self._process:  # a handler stopped the engine
                return

    def _lines(self) -> list[bytes | OversizedLine]:
        """Complete lines in the buffer; a line over the cap is dropped as it streams in, never held."""
        lines: list[bytes | OversizedLine] = []
        buffer = self._stdout
        while buffer:
            newline = buffer.find(b"\n")
            if self._skipping:
                if newline < 0:
                    self._skipping += len(buffer)
                    buffer.clear()
                    break
                lines.append(OversizedLine(self._skipping + newline + 1, self.max_line_bytes))
                del buffer[: newline + 1]
                self._skipping = 0
            elif newline < 0:
                if len(buffer) > self.max_line_bytes:
                    self._skipping = len(buffer)
                    buffer.clear()
                break
            else:
                line = bytes(buffer[: newline + 1])
                del buffer[: newline + 1]
                if line.strip():
                    lines.append(line)
        return lines

    def _read_stderr(self) -> None:
        self._stderr += bytes(self._process.readAllStandardError().data())
        *complete, rest = self._stderr.split(b"\n")
        self._stderr = bytearray(rest[-65536:])
        for raw in complete:
            self._emit_stderr(raw.decode("utf-8", "replace"))

    def _emit_stderr(self, text: str) -> None:
        text = text.rstrip("\r")
        self.stderr_tail.append(text)
        self.stderr_line.emit(text)

    def _dispatch(self, event: Event) -> None:
        f = event.fields
        name = event.name
        if name in ("result", "error") and self._ping is not None and f.get("id") == self._ping[0]:
            self._ping = None
            if name == "result":
                self.info.update(f["payload"])
            return
        if name == "ready":
            if self._state == STARTING:
                self._start_timer.stop()
                self.info = dict(f)
                self._set_state(READY)
                self._ping_timer.start()
                self.ready.emit(dict(f))
        elif name == "progress":
            self.progress.emit(f["job"], f["phase"], f["step"], f["total"], f["eta"])
        elif name == "timing":
            self.timing.emit(f["job"], f["step"], f["dense_ms"], f["sparse_ms"])
        elif name == "preview":
            data = self._payload(f["frames"], f"preview of step {f['step']}")
            if data is not None:
                self.preview.emit(f["job"], f["step"], f["which"], data, f["width"], f["height"])
        elif name == "mask":
            data = self._payload(f["data"], f"mask {f['id']}")
            if data is not None:
                try:
                    array = np.load(io.BytesIO(data), allow_pickle=False)
                except (ValueError, OSError) as error:
                    self.error.emit(f["id"], "bad_payload", f"the engine's mask {f['id']} is unreadable: {error}")
                else:
                    self.mask.emit(f["id"], array)
        elif name == "result":
            self.result.emit(f["id"], f["payload"])
        elif name == "error":
            self.error.emit(str(f.get("id") or ""), f["code"], f["message"])
        elif name == "cancelled":
            self.cancelled.emit(f["job"])
        elif name == "log":
            self.log.emit(f["level"], f["message"])

    def _payload(self, payload: Any, what: str) -> bytes | None:
        try:
            return payload.read()
        except OSError as error:
            self.error.emit("", "bad_payload", f"cannot read the engine's {what}: {error.strerror or error} "
                                               f"({payload.path}); is the engine on another machine? "
                                               "Start it with --remote")
            return None
