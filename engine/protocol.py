"""The studio <-> engine protocol: versioned JSON lines (stdlib only, so the studio can use it).

Wire format
-----------
One JSON object per line, UTF-8, terminated by ``\\n``; at most ``MAX_LINE_BYTES`` per line. Every
object carries the protocol version ``"v": 1``. Commands (studio -> engine) name themselves with
``"cmd"`` and carry a client-chosen string ``"id"``; events (engine -> studio) name themselves with
``"event"``. All other fields sit flat beside those keys. A command to the engine::

    {"v": 1, "cmd": "generate", "id": "c7", "prompt": "a red circle bouncing", "seed": 3, "mode": "sparse"}

and an event back to the studio::

    {"v": 1, "event": "progress", "job": "c7", "phase": "denoise", "step": 3, "total": 30, "eta": 12.5}

Rules
-----
- Every command is answered by exactly one ``result`` or one ``error`` carrying its ``id``; events that
  come before (``progress``, ``preview``, ``timing``, ``mask``, ``log``) never end a command.
- A command that starts a job (``calibrate``, ``generate``, ``compare``) uses its ``id`` as the job
  name: the job's events carry ``"job": id``, ``cancel`` names it, and a cancelled job ends with a
  ``cancelled`` event and then an ``error`` with code ``"cancelled"``.
- ``get_mask`` is answered by a ``mask`` event (carrying its ``id``) and then its ``result``.
- Required fields per message are declared once, in ``SCHEMA`` (rendered at the end of this docstring);
  unknown extra fields are allowed, so a newer peer may add optional fields without a version bump.
- Large data (preview frames, masks) travel as a ``Payload``: ``{"path": ...}`` to a file in the job
  folder when the studio runs on the same machine, ``{"b64": ...}`` inline when it is remote.
- Decoding never raises: a bad line becomes an ``error`` event with a stable ``code`` (see
  ``DECODE_ERRORS``) and a message that says what to do, so the engine answers it and keeps serving.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal, Union

from calibstudio.engine.atomic import atomic_write

__all__ = [
    "DECODE_ERRORS",
    "MAX_ID_CHARS",
    "MAX_LINE_BYTES",
    "PROTOCOL_VERSION",
    "SCHEMA",
    "Command",
    "Event",
    "OversizedLine",
    "Payload",
    "decode_command",
    "decode_event",
    "describe_schema",
    "encode",
    "read_message_lines",
]

PROTOCOL_VERSION = 1
MAX_LINE_BYTES = 64 * 1024 * 1024
MAX_ID_CHARS = 256  # ids come back in every reply; keep them short
_SKIP_CHUNK = 1 << 20  # how much of an oversized line is read at a time while skipping it

# Codes of the errors that decoding produces. The engine may send other codes of its own
# (e.g. "cancelled", "no_model", "internal"); clients should treat unknown codes as plain errors.
DECODE_ERRORS = ("malformed", "too_large", "bad_version", "unknown_command", "unknown_event", "bad_field")


@dataclass(frozen=True)
class Payload:
    """Bytes that travel either as a file path (local client) or inline as base64 (remote client).

    Exactly one of ``path`` and ``data`` is set. On the wire: ``{"path": "..."}`` or ``{"b64": "..."}``.
    """

    path: str | None = None
    data: bytes | None = None

    def __post_init__(self) -> None:
        if (self.path is None) == (self.data is None):
            raise ValueError("a Payload holds exactly one of path= and data=")

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> Payload:
        """Refer to a file the peer can read itself (same machine): nothing is copied into the line."""
        return cls(path=os.fspath(path))

    @classmethod
    def inline(cls, data: bytes) -> Payload:
        """Carry the bytes in the line itself (base64), for a peer on another machine."""
        return cls(data=bytes(data))

    @classmethod
    def store(cls, data: bytes, *, folder: str | os.PathLike[str] | None, name: str) -> Payload:
        """Write ``data`` to ``folder/name`` and refer to it, or inline it when ``folder`` is None (remote).

        The file is written atomically so that a reader never sees half of it.
        """
        if folder is None:
            return cls.inline(data)
        target = Path(folder) / name
        target.parent.mkdir(parents=True, exist_ok=True)
        return cls.from_file(atomic_write(target, lambda tmp: tmp.write_bytes(data)))

    def read(self) -> bytes:
        """The bytes, whichever form they came in (reads the file for a path payload)."""
        if self.data is not None:
            return self.data
        return Path(typing.cast(str, self.path)).read_bytes()

    def to_wire(self) -> dict[str, str]:
        """The JSON form: ``{"path": ...}`` or ``{"b64": ...}``."""
        if self.path is not None:
            return {"path": self.path}
        return {"b64": base64.b64encode(typing.cast(bytes, self.data)).decode("ascii")}

    @classmethod
    def from_wire(cls, obj: Any) -> Payload:
        """Parse the JSON form; ValueError (naming the problem) if it is neither form or bad base64."""
        if not isinstance(obj, dict):
            raise ValueError(f"expected an object with \"path\" or \"b64\", got {_json_type(obj)}")
        has_path, has_b64 = "path" in obj, "b64" in obj
        if has_path == has_b64:
            raise ValueError("expected exactly one of \"path\" and \"b64\"")
        if has_path:
            if not isinstance(obj["path"], str) or not obj["path"]:
                raise ValueError("\"path\" must be a non-empty string")
            return cls(path=obj["path"])
        if not isinstance(obj["b64"], str):
            raise ValueError("\"b64\" must be a string")
        try:
            return cls(data=base64.b64decode(obj["b64"], validate=True))
        except (binascii.Error, ValueError) as e:
            raise ValueError(f"\"b64\" is not valid base64 ({e})") from None


# ----------------------------------------------------------------------------------------------
# The one table: required fields of every command and event. Used by validation (encode/decode)
# and by the docs (describe_schema, appended to this module's docstring). Types: str, int, bool,
# dict, float (any JSON number), list[int], X | None (required but may be null), Literal[...]
# (one of the strings), Payload (a file path or base64). Extra fields are always allowed.
# ----------------------------------------------------------------------------------------------
SCHEMA: dict[str, dict[str, dict[str, Any]]] = {
    "command": {
        "hello": {},  # optional: "client" (name/version); result payload: engine, protocol, device
        "load_model": {"model": str},  # adapter name ("demo", "wan2.1") or a local diffusers folder
        # where to write the profile; optional: prompts, steps, bins, error_bound (0: off), error_prompts
        "calibrate": {"profile": str},
        # optional for sparse generate and compare: "profile" (default the model's shipped one), "threshold"
        # (default the model's recommended one), "dense_steps" (first steps run dense; default the model's:
        # 0 but for demo models trained with --local-below), "compile" (torch.compile the transformer; default false)
        "generate": {"prompt": str, "seed": int, "mode": Literal["dense", "sparse"]},
        "compare": {"prompt": str, "seed": int},  # dense and sparse in lockstep from one seed
        "get_mask": {"bin": int, "layer": int, "head": int},  # optional: "job" or "profile", "tau"
        "cancel": {"job": str},
        "shutdown": {},
    },
    "event": {
        "ready": {"engine": str},  # sent once at start-up, before any command is read
        "progress": {"job": str, "phase": str, "step": int, "total": int, "eta": float | None},
        "preview": {"job": str, "step": int, "which": Literal["dense", "sparse"], "frames": Payload,
                    "width": int, "height": int},
        "timing": {"job": str, "step": int, "dense_ms": float | None, "sparse_ms": float | None},
        "mask": {"id": str, "data": Payload, "shape": list[int], "dtype": str},
        "result": {"id": str, "payload": dict},
        "error": {"code": str, "message": str},  # optional: "id" of the command it answers
        "cancelled": {"job": str},
        "log": {"level": Literal["debug", "info", "warning", "error"], "message": str},
    },
}
COMMANDS = SCHEMA["command"]
EVENTS = SCHEMA["event"]
_COMMAND_KEYS = ("v", "cmd", "id")  # the envelope of a command; everything else is an argument
_EVENT_KEYS = ("v", "event")


@dataclass(frozen=True)
class Command:
    """A request from the studio; ``id`` matches it to its ``result`` or ``error``."""

    name: str
    id: str
    args: dict[str, Any] = field(default_factory=dict)

    def reply(self, payload: dict[str, Any] | None = None) -> Event:
        """The ``result`` event that completes this command."""
        return Event("result", {"id": self.id, "payload": dict(payload or {})})

    def fail(self, code: str, message: str) -> Event:
        """The ``error`` event that completes this command."""
        return Event.error(code, message, id=self.id)


@dataclass(frozen=True)
class Event:
    """A message from the engine; ``fields`` holds everything but the envelope (``v``, ``event``)."""

    name: str
    fields: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def error(cls, code: str, message: str, id: str | None = None) -> Event:
        """An ``error`` event; ``id`` names the command it answers when known."""
        fields: dict[str, Any] = {"code": code, "message": message}
        if id is not None:
            fields["id"] = id
        return cls("error", fields)

    @property
    def is_error(self) -> bool:
        return self.name == "error"


@dataclass(frozen=True)
class OversizedLine:
    """Stands in for a line longer than the cap (already skipped); decodes to a ``too_large`` error."""

    size: int  # bytes seen, newline included
    limit: int


# ----------------------------------------------------------------------------------------------
# Encoding
# ----------------------------------------------------------------------------------------------
def encode(msg: Command | Event, *, max_bytes: int = MAX_LINE_BYTES) -> bytes:
    """One wire line (with trailing newline) for ``msg``.

    Raises ValueError on programmer errors: unknown names, missing or ill-typed required fields,
    envelope keys among the fields, values JSON cannot carry (NaN, objects), or a line over the cap
    (send such data as a file ``Payload``). Output is ASCII (non-ASCII is escaped), hence valid UTF-8.
    """
    if isinstance(msg, Command):
        if msg.name not in COMMANDS:
            raise ValueError(f"unknown command {msg.name!r}; known: {', '.join(COMMANDS)}")
        if not _good_id(msg.id):
            raise ValueError(f"command id must be a non-empty string of at most {MAX_ID_CHARS} chars")
        body, schema, envelope = msg.args, COMMANDS[msg.name], {"v": PROTOCOL_VERSION, "cmd": msg.name, "id": msg.id}
    elif isinstance(msg, Event):
        if msg.name not in EVENTS:
            raise ValueError(f"unknown event {msg.name!r}; known: {', '.join(EVENTS)}")
        body, schema, envelope = msg.fields, EVENTS[msg.name], {"v": PROTOCOL_VERSION, "event": msg.name}
    else:
        raise ValueError(f"encode() takes a Command or an Event, not {type(msg).__name__}")
    clash = [k for k in envelope if k in body]
    if clash:
        raise ValueError(f"{msg.name}: field(s) {clash} collide with the message envelope")
    for name, spec in schema.items():
        if name not in body:
            raise ValueError(f"{msg.name}: missing required field {name!r} ({_type_name(spec)})")
        try:
            _coerce(body[name], spec)
        except _Bad as e:
            raise ValueError(f"{msg.name}: field {name!r} {e}") from None
    try:
        text = json.dumps({**envelope, **body}, allow_nan=False, separators=(",", ":"), default=_json_default)
    except (TypeError, ValueError, RecursionError) as e:
        raise ValueError(f"{msg.name}: cannot encode as JSON: {e}") from None
    line = text.encode("ascii") + b"\n"
    if len(line) - 1 > max_bytes:
        raise ValueError(f"{msg.name}: line of {len(line) - 1} bytes exceeds the cap of {max_bytes}; "
                         "send large data as a file Payload")
    return line


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Payload):
        return obj.to_wire()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


# ----------------------------------------------------------------------------------------------
# Decoding (never raises)
# ----------------------------------------------------------------------------------------------
Line = bytes | bytearray | str | OversizedLine


def decode_command(line: Line, *, max_bytes: int = MAX_LINE_BYTES) -> Command | Event:
    """Parse one line from the studio. Never raises: a bad line comes back as an ``error`` Event
    (with the command's ``id`` when it could be read) that the engine can send back as is."""
    try:
        return _decode(line, max_bytes, "command")
    except Exception as e:  # a bug here must not take the engine down
        return Event.error("internal", f"protocol decoder failed ({type(e).__name__}: {e}); please report this bug")


def decode_event(line: Line, *, max_bytes: int = MAX_LINE_BYTES) -> Event:
    """Parse one line from the engine. Never raises: a bad line comes back as an ``error`` Event."""
    try:
        msg = _decode(line, max_bytes, "event")
    except Exception as e:
        return Event.error("internal", f"protocol decoder failed ({type(e).__name__}: {e}); please report this bug")
    return typing.cast(Event, msg)  # events decode to Event only


def _decode(line: Line, max_bytes: int, kind: str) -> Command | Event:
    peer, me = ("studio", "engine") if kind == "command" else ("engine", "studio")
    if isinstance(line, OversizedLine):
        return _too_large(line.size, line.limit)
    if isinstance(line, str):
        size = len(line) if 4 * len(line) <= max_bytes else len(line.encode("utf-8", "surrogatepass"))
        size -= len(line) - len(line.rstrip("\r\n"))
    else:
        size = len(line.rstrip(b"\r\n"))
    if size > max_bytes:
        return _too_large(size, max_bytes)
    if isinstance(line, (bytes, bytearray)):
        try:
            text = bytes(line).decode("utf-8")
        except UnicodeDecodeError as e:
            return Event.error("malformed", f"line is not valid UTF-8 (byte 0x{line[e.start]:02x} at offset "
                                            f"{e.start}); send UTF-8 encoded JSON")
    else:
        text = line
    if not text.strip():
        return Event.error("malformed", "empty line; send one JSON object per line")
    try:
        obj = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as e:
        return Event.error("malformed", f"line is not valid JSON ({e.msg} at column {e.colno}); "
                                        "send one JSON object per line")
    except (ValueError, RecursionError) as e:
        return Event.error("malformed", f"line is not acceptable JSON ({_short(str(e), 120)}); "
                                        "send plain JSON (finite numbers, modest nesting)")
    if not isinstance(obj, dict):
        return Event.error("malformed", f"line is a JSON {_json_type(obj)}, not an object; "
                                        "every message is one JSON object")

    raw_id = obj.get("id")
    cid = raw_id if kind == "command" and _good_id(raw_id) else None
    version = obj.get("v")
    if type(version) is not int or version != PROTOCOL_VERSION:
        if "v" not in obj:
            why = "message has no protocol version \"v\""
        else:
            why = f"protocol version {_short(version)} is not supported by this {me}"
        return Event.error("bad_version", f"{why} (speaks {PROTOCOL_VERSION}); the {peer} and {me} come from "
                                          "different calibstudio versions: upgrade calibstudio so both match", id=cid)

    name_key, other_key, table = ("cmd", "event", COMMANDS) if kind == "command" else ("event", "cmd", EVENTS)
    if name_key not in obj:
        if other_key in obj:
            hint = f"this is {'an event' if other_key == 'event' else 'a command'}, but the {me} expects {kind}s"
        else:
            hint = f"message has no \"{name_key}\" naming the {kind}"
        return Event.error("malformed", f"{hint}; send {{\"v\": {PROTOCOL_VERSION}, \"{name_key}\": ...}}", id=cid)
    name = obj[name_key]
    if not isinstance(name, str):
        return Event.error("bad_field", f"\"{name_key}\" must be a string, got {_json_type(name)}", id=cid)
    if name not in table:
        return Event.error(f"unknown_{kind}", f"unknown {kind} {_short(name)} (this {me} knows: {', '.join(table)}); "
                                              f"the {peer} may be newer than the {me}: upgrade calibstudio", id=cid)
    where = f"{kind} {name!r}"
    if kind == "command":
        if not _good_id(raw_id):
            if "id" not in obj:
                got = "none"
            elif isinstance(raw_id, str):
                got = f"a string of {len(raw_id)} chars"
            else:
                got = _json_type(raw_id)
            return Event.error("bad_field", f"{where} needs an \"id\": a non-empty string of at most "
                                            f"{MAX_ID_CHARS} chars (got {got}); the {peer} must tag every command")
        where += f" (id {raw_id!r})"
    envelope = _COMMAND_KEYS if kind == "command" else _EVENT_KEYS
    body = {k: v for k, v in obj.items() if k not in envelope}
    for fname, spec in table[name].items():
        if fname not in body:
            return Event.error("bad_field", f"{where} is missing required field {fname!r} ({_type_name(spec)}); "
                                            f"the {peer} and {me} may come from different calibstudio versions",
                               id=cid)
        try:
            body[fname] = _coerce(body[fname], spec)
        except _Bad as e:
            return Event.error("bad_field", f"{where}: field {fname!r} {e}; fix the {peer}'s message or run "
                                            "the same calibstudio version on both sides", id=cid)
    if kind == "command":
        return Command(name, typing.cast(str, raw_id), body)
    return Event(name, body)


def _too_large(size: int, limit: int) -> Event:
    return Event.error("too_large", f"line of {size} bytes exceeds the cap of {limit} bytes and was dropped; "
                                    "send large data as a file Payload (or split it)")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _good_id(value: Any) -> bool:
    return isinstance(value, str) and 0 < len(value) <= MAX_ID_CHARS


# ----------------------------------------------------------------------------------------------
# Field types: checking, wire conversion (Payload) and names for messages and docs
# ----------------------------------------------------------------------------------------------
class _Bad(Exception):
    """A field value does not match its declared type (message says how)."""


def _coerce(value: Any, spec: Any) -> Any:
    """Check ``value`` against ``spec``; returns it converted for the decoded side (Payload from JSON)."""
    origin, args = typing.get_origin(spec), typing.get_args(spec)
    if origin in (Union, types.UnionType):
        for alt in args:
            try:
                return _coerce(value, alt)
            except _Bad:
                pass
        raise _Bad(f"must be {_type_name(spec)}, got {_json_type(value)}")
    if origin is Literal:
        if isinstance(value, str) and value in args:
            return value
        raise _Bad(f"must be {_type_name(spec)}, got {_short(value)}")
    if origin is list:
        if not isinstance(value, list):
            raise _Bad(f"must be {_type_name(spec)}, got {_json_type(value)}")
        for i, item in enumerate(value):
            try:
                _coerce(item, args[0])
            except _Bad:
                raise _Bad(f"must be {_type_name(spec)}, item {i} is {_json_type(item)}") from None
        return value
    if spec is type(None):
        if value is None:
            return None
    elif spec is Payload:
        if isinstance(value, Payload):
            return value
        try:
            return Payload.from_wire(value)
        except ValueError as e:
            raise _Bad(f"must be {_type_name(spec)}: {e}") from None
    elif spec is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return value
    elif spec is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(value, spec):
        return value
    raise _Bad(f"must be {_type_name(spec)}, got {_json_type(value)}")


_TYPE_NAMES = {str: "string", int: "integer", float: "number", bool: "boolean", dict: "object", list: "array",
               type(None): "null", Payload: "payload ({\"path\": ...} or {\"b64\": ...})"}


def _type_name(spec: Any) -> str:
    origin, args = typing.get_origin(spec), typing.get_args(spec)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args)
    if origin is Literal:
        return "one of " + ", ".join(json.dumps(a) for a in args)
    if origin is list:
        return f"array of {_type_name(args[0])}"
    return _TYPE_NAMES.get(spec, getattr(spec, "__name__", str(spec)))


def _json_type(value: Any) -> str:
    if isinstance(value, Payload):
        return "payload"
    for t in (bool, type(None), int, float, str, list, dict):
        if isinstance(value, t):
            return _TYPE_NAMES[t]
    return type(value).__name__


def _short(value: Any, limit: int = 60) -> str:
    """A bounded, ASCII-safe rendering of a value for error messages."""
    text = json.dumps(value) if isinstance(value, (str, int, float, bool, type(None))) else _json_type(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ----------------------------------------------------------------------------------------------
# Reading lines from a stream
# ----------------------------------------------------------------------------------------------
def read_message_lines(stream: IO[bytes], max_bytes: int = MAX_LINE_BYTES) -> Iterator[bytes | OversizedLine]:
    """Lines of a binary stream (e.g. ``sys.stdin.buffer``), never buffering more than the cap.

    Uses ``readline(limit)`` so a runaway line is not held in memory: a line longer than ``max_bytes``
    is skipped in chunks and yields one ``OversizedLine`` (which decodes to a ``too_large`` error);
    reading then continues with the next line. Blank lines are skipped. Ends at end of stream.
    """
    while True:
        line = stream.readline(max_bytes + 1)
        if not line:
            return
        if len(line) > max_bytes and not line.endswith(b"\n"):
            seen = len(line)
            while True:
                chunk = stream.readline(min(_SKIP_CHUNK, max_bytes + 1))
                seen += len(chunk)
                if not chunk or chunk.endswith(b"\n"):
                    break
            yield OversizedLine(seen, max_bytes)
            continue
        if line.strip():
            yield line


# ----------------------------------------------------------------------------------------------
# Docs from the table
# ----------------------------------------------------------------------------------------------
def describe_schema() -> str:
    """The required fields of every command and event, as text (from ``SCHEMA``, so never stale)."""
    out = []
    for kind, table in SCHEMA.items():
        out.append(f"{kind.capitalize()}s\n{'-' * (len(kind) + 1)}")
        for name, fields in table.items():
            spec = ", ".join(f"{f}: {_type_name(t)}" for f, t in fields.items()) or "(no fields)"
            out.append(f"- ``{name}``: {spec}")
        out.append("")
    return "\n".join(out)


if __doc__ is not None:  # python -OO strips docstrings
    __doc__ += "\nRequired fields (from SCHEMA)\n=============================\n\n" + describe_schema()
