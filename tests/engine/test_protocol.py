"""Protocol: every message survives the wire, bad lines become error events (never exceptions), and
oversized lines are dropped without being buffered."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from calibstudio.engine import protocol as P
from calibstudio.engine.protocol import (
    DECODE_ERRORS,
    MAX_LINE_BYTES,
    SCHEMA,
    Command,
    Event,
    OversizedLine,
    Payload,
    decode_command,
    decode_event,
    encode,
    read_message_lines,
)

# One example of every command and event (extra fields included where they are typical).
COMMAND_EXAMPLES = [
    Command("hello", "c1", {"client": "studio 0.1.0"}),
    Command("load_model", "c2", {"model": "demo"}),
    Command("calibrate", "c3", {"profile": "/tmp/p.safetensors", "prompts": ["a red circle"], "steps": 20}),
    Command("generate", "c4", {"prompt": "a blue square moving left", "seed": 7, "mode": "sparse", "tau": 0.95}),
    Command("compare", "c5", {"prompt": "a green triangle", "seed": 0}),
    Command("get_mask", "c6", {"bin": 0, "layer": 3, "head": 11, "job": "c3"}),
    Command("cancel", "c7", {"job": "c4"}),
    Command("shutdown", "c8"),
]
EVENT_EXAMPLES = [
    Event("ready", {"engine": "calibstudio 0.1.0", "device": "cpu"}),
    Event("progress", {"job": "c4", "phase": "denoise", "step": 3, "total": 30, "eta": 12.5}),
    Event("progress", {"job": "c3", "phase": "load", "step": 0, "total": 1, "eta": None}),
    Event("preview", {"job": "c5", "step": 4, "which": "dense", "frames": Payload.inline(b"\x89PNG\x00\xff"),
                      "width": 64, "height": 48}),
    Event("preview", {"job": "c5", "step": 4, "which": "sparse", "frames": Payload.from_file("/jobs/c5/s4.png"),
                      "width": 64, "height": 48}),
    Event("timing", {"job": "c5", "step": 4, "dense_ms": 120.5, "sparse_ms": 41}),
    Event("timing", {"job": "c5", "step": 0, "dense_ms": None, "sparse_ms": None}),
    Event("mask", {"id": "c6", "data": Payload.inline(bytes(range(256))), "shape": [16, 16], "dtype": "float32"}),
    Event("result", {"id": "c2", "payload": {"model": "demo", "grid": [4, 16, 16]}}),
    Event("error", {"code": "no_model", "message": "load a model first", "id": "c4"}),
    Event("error", {"code": "malformed", "message": "line is not valid JSON"}),
    Event("cancelled", {"job": "c4"}),
    Event("log", {"level": "warning", "message": "CUDA not found; running on the CPU"}),
]


def test_examples_cover_the_schema():
    assert {c.name for c in COMMAND_EXAMPLES} == set(SCHEMA["command"])
    assert {e.name for e in EVENT_EXAMPLES} == set(SCHEMA["event"])
    assert not set(SCHEMA["command"]) & set(SCHEMA["event"])


@pytest.mark.parametrize("cmd", COMMAND_EXAMPLES, ids=lambda c: c.name)
def test_command_round_trip(cmd: Command):
    line = encode(cmd)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    obj = json.loads(line)
    assert obj["v"] == P.PROTOCOL_VERSION and obj["cmd"] == cmd.name and obj["id"] == cmd.id
    assert decode_command(line) == cmd
    assert decode_command(line.decode()) == cmd  # str lines too


@pytest.mark.parametrize("event", EVENT_EXAMPLES, ids=lambda e: e.name)
def test_event_round_trip(event: Event):
    line = encode(event)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert json.loads(line)["event"] == event.name
    assert decode_event(line) == event


def test_non_ascii_and_newlines_stay_on_one_line():
    cmd = Command("generate", "ü-1", {"prompt": "ein roter Kreis\nüber Grün ✓", "seed": 1, "mode": "dense"})
    line = encode(cmd)
    assert line.count(b"\n") == 1 and line.isascii()
    assert decode_command(line) == cmd


def test_extra_fields_are_allowed():
    line = b'{"v": 1, "cmd": "cancel", "id": "x", "job": "j", "future_option": {"a": [1, 2]}}\n'
    assert decode_command(line) == Command("cancel", "x", {"job": "j", "future_option": {"a": [1, 2]}})


def test_reply_helpers():
    cmd = COMMAND_EXAMPLES[1]
    assert decode_event(encode(cmd.reply({"ok": True}))) == Event("result", {"id": "c2", "payload": {"ok": True}})
    err = decode_event(encode(cmd.fail("no_model", "no such model")))
    assert err.is_error and err.fields == {"code": "no_model", "message": "no such model", "id": "c2"}


def test_payload_forms(tmp_path):
    data = bytes(range(256)) * 3
    local = Payload.store(data, folder=tmp_path / "job", name="mask.bin")
    remote = Payload.store(data, folder=None, name="mask.bin")
    assert local.path is not None and local.data is None and local.read() == data
    assert remote.path is None and remote.read() == data
    assert list((tmp_path / "job").iterdir()) == [tmp_path / "job" / "mask.bin"]  # no temp file left behind
    for p in (local, remote):
        ev = Event("mask", {"id": "m", "data": p, "shape": [3, 256], "dtype": "uint8"})
        back = decode_event(encode(ev))
        assert back == ev and back.fields["data"].read() == data
    assert Payload.from_wire({"b64": "YWJj"}).read() == b"abc"
    assert Payload.from_file(tmp_path / "job" / "mask.bin").read() == data
    for bad in ({}, {"path": "a", "b64": ""}, {"path": ""}, {"b64": "@@"}, {"b64": 3}, "x"):
        with pytest.raises(ValueError):
            Payload.from_wire(bad)
    with pytest.raises(ValueError):
        Payload()


def _line(**obj) -> bytes:
    return json.dumps(obj).encode() + b"\n"


# (line, decoder, expected code, expected id, words the message must contain)
ERROR_CASES = [
    (b"{not json\n", decode_command, "malformed", None, "not valid JSON"),
    (b"\xff\xfe{}\n", decode_command, "malformed", None, "UTF-8"),
    (b"[1, 2]\n", decode_command, "malformed", None, "not an object"),
    (b"\n", decode_command, "malformed", None, "empty line"),
    (b'{"v": 1, "cmd": "hello", "id": "a", "x": NaN}', decode_command, "malformed", None, "NaN"),
    (b"[" * 100_000 + b"]" * 100_000, decode_command, "malformed", None, "JSON"),
    (_line(v=1, id="a"), decode_command, "malformed", "a", '"cmd"'),
    (_line(v=1, event="ready", engine="e"), decode_command, "malformed", None, "expects commands"),
    (_line(v=1, cmd="hello", id="a"), decode_event, "malformed", None, "expects events"),
    (b"x" * 2000, decode_command, "too_large", None, "exceeds the cap"),
    (OversizedLine(5000, 1024), decode_event, "too_large", None, "file Payload"),
    (_line(v=2, cmd="hello", id="a"), decode_command, "bad_version", "a", "protocol version 2 is not supported"),
    (_line(cmd="hello", id="a"), decode_command, "bad_version", "a", "no protocol version"),
    (_line(v="1", cmd="hello", id="a"), decode_command, "bad_version", "a", "upgrade calibstudio"),
    (_line(v=True, cmd="hello", id="a"), decode_command, "bad_version", "a", "speaks 1"),
    (_line(v=2, event="ready", engine="e"), decode_event, "bad_version", None, "this studio"),
    (_line(v=1, cmd="fly", id="a"), decode_command, "unknown_command", "a", '"fly"'),
    (_line(v=1, event="fireworks"), decode_event, "unknown_event", None, '"fireworks"'),
    (_line(v=1, cmd=3, id="a"), decode_command, "bad_field", "a", '"cmd" must be a string'),
    (_line(v=1, cmd="hello"), decode_command, "bad_field", None, '"id"'),
    (_line(v=1, cmd="hello", id=""), decode_command, "bad_field", None, '"id"'),
    (_line(v=1, cmd="hello", id=7), decode_command, "bad_field", None, '"id"'),
    (_line(v=1, cmd="hello", id="x" * 300), decode_command, "bad_field", None, "at most 256"),
    (_line(v=1, cmd="load_model", id="a"), decode_command, "bad_field", "a", "missing required field 'model'"),
    (_line(v=1, cmd="generate", id="a", prompt="p", seed="5", mode="dense"), decode_command, "bad_field", "a",
     "'seed' must be integer, got string"),
    (_line(v=1, cmd="generate", id="a", prompt="p", seed=True, mode="dense"), decode_command, "bad_field", "a",
     "'seed' must be integer, got boolean"),
    (_line(v=1, cmd="generate", id="a", prompt="p", seed=1, mode="fast"), decode_command, "bad_field", "a",
     'one of "dense", "sparse"'),
    (_line(v=1, event="progress", job="j", phase="p", step=1, total=2, eta="soon"), decode_event, "bad_field", None,
     "number or null"),
    (_line(v=1, event="mask", id="m", data={"b64": "@@"}, shape=[1], dtype="f4"), decode_event, "bad_field", None,
     "base64"),
    (_line(v=1, event="mask", id="m", data={"path": "/x"}, shape=[1, "2"], dtype="f4"), decode_event, "bad_field",
     None, "array of integer"),
]


@pytest.mark.parametrize("line, decode, code, cid, words", ERROR_CASES,
                         ids=[f"{i}-{c[2]}" for i, c in enumerate(ERROR_CASES)])
def test_error_codes(line, decode, code, cid, words):
    err = decode(line, max_bytes=1024) if code == "too_large" and isinstance(line, bytes) else decode(line)
    assert isinstance(err, Event) and err.is_error
    assert err.fields["code"] == code
    assert err.fields.get("id") == cid
    assert words in err.fields["message"], err.fields["message"]
    assert decode_event(encode(err)) == err  # the engine can send it back as is


def test_every_decode_error_code_is_exercised():
    assert {c[2] for c in ERROR_CASES} == set(DECODE_ERRORS)


@pytest.mark.parametrize("msg, words", [
    (Command("fly", "a"), "unknown command"),
    (Event("fireworks"), "unknown event"),
    (Command("hello", ""), "id"),
    (Command("load_model", "a"), "missing required field 'model'"),
    (Command("generate", "a", {"prompt": "p", "seed": 1.5, "mode": "dense"}), "'seed' must be integer"),
    (Command("hello", "a", {"id": "b"}), "collide"),
    (Event("cancelled", {"job": "j", "event": "x"}), "collide"),
    (Command("hello", "a", {"x": float("nan")}), "JSON"),
    (Command("hello", "a", {"x": object()}), "JSON"),
    (Event("preview", {"job": "j", "step": 0, "which": "dense", "frames": b"raw", "width": 1, "height": 1}),
     "payload"),
    ("hello", "Command or an Event"),
])
def test_encode_rejects_programmer_errors(msg, words):
    with pytest.raises(ValueError, match=words):
        encode(msg)


def test_encode_rejects_lines_over_the_cap():
    big = Event("result", {"id": "a", "payload": {"blob": "x" * 2000}})
    with pytest.raises(ValueError, match="file Payload"):
        encode(big, max_bytes=1024)
    assert len(encode(big)) > 2000


class _Recording(io.BytesIO):
    """A binary stream that remembers the largest readline() limit it was asked for."""

    largest = 0

    def readline(self, size=-1):
        assert size is not None and size > 0, "readline without a limit would buffer a whole line"
        self.largest = max(self.largest, size)
        return super().readline(size)


def test_read_message_lines_drops_oversized_line_and_continues():
    good = encode(COMMAND_EXAMPLES[1])
    head = b'{"v":1,"cmd":"cancel","id":"z","job":"'
    job = "j" * (1024 - len(head) - 2)
    at_cap = head + job.encode() + b'"}\n'
    assert len(at_cap) == 1024 + 1
    stream = _Recording(b"\n" + b"A" * 5000 + b"\n" + good + b"  \n" + at_cap + b"B" * 3000 + b"\n" + good
                        + b'{"v":1,"cmd":"shutdown","id":"last"}')  # no newline at the end
    items = list(read_message_lines(stream, max_bytes=1024))
    assert stream.largest <= 1025
    assert [type(i) for i in items] == [OversizedLine, bytes, bytes, OversizedLine, bytes, bytes]
    assert items[0] == OversizedLine(5001, 1024)
    decoded = [decode_command(i, max_bytes=1024) for i in items]
    assert decoded[0].fields["code"] == "too_large" and decoded[3].fields["code"] == "too_large"
    assert decoded[1] == decoded[4] == COMMAND_EXAMPLES[1]
    assert decoded[2] == Command("cancel", "z", {"job": job})
    assert decoded[5] == Command("shutdown", "last")


def test_read_message_lines_oversized_at_end_of_stream():
    items = list(read_message_lines(io.BytesIO(b"C" * 4000), max_bytes=1024))
    assert items == [OversizedLine(4000, 1024)]
    assert MAX_LINE_BYTES == 64 * 1024 * 1024


# ---- fuzzing: decoding never raises, and whatever it returns can be sent and read back ----

def _check_decoded(msg):
    assert isinstance(msg, (Command, Event))
    if isinstance(msg, Event) and msg.is_error:
        assert msg.fields["code"] != "internal", msg  # the decoder's own safety net never fires
    assert type(msg)(**msg.__dict__) == msg
    line = encode(msg)
    back = decode_command(line) if isinstance(msg, Command) else decode_event(line)
    assert back == msg


def _check_line(line):
    a, b = decode_command(line), decode_event(line)
    _check_decoded(a)
    _check_decoded(b)
    assert isinstance(b, Event)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
def _valid(spec) -> st.SearchStrategy:
    """Values of a SCHEMA type, so that fuzzing reaches the field checks and successful decodes."""
    import typing

    origin, args = typing.get_origin(spec), typing.get_args(spec)
    if origin is typing.Literal:
        return st.sampled_from(args)
    if args and origin is not list:  # X | None
        return st.one_of([_valid(a) for a in args])
    return {
        str: st.text(max_size=6), int: st.integers(), float: st.floats(allow_nan=False) | st.integers(),
        type(None): st.none(), dict: st.dictionaries(st.text(max_size=4), leaves, max_size=3),
        list[int]: st.lists(st.integers(), max_size=3),
        Payload: st.binary(max_size=12).map(lambda b: {"b64": base64.b64encode(b).decode()})
        | st.text(min_size=1, max_size=6).map(lambda t: {"path": t}) | st.just({"b64": "@@"}),
    }[spec]


leaves = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6)
kinds_and_names = [("cmd", n) for n in SCHEMA["command"]] + [("event", n) for n in SCHEMA["event"]]


def _mostly(good: st.SearchStrategy, bad: st.SearchStrategy | None = None) -> st.SearchStrategy:
    return st.integers(0, 7).flatmap(lambda i: (leaves if bad is None else bad) if i == 0 else good)


def _message(kind_name) -> st.SearchStrategy:
    """Mostly valid messages of one kind, with a wrong value here and a missing key there."""
    kind, name = kind_name
    table = SCHEMA["command" if kind == "cmd" else "event"][name]
    body = {"v": _mostly(st.just(1), st.sampled_from([2, "1", True, None, 1.0]) | leaves), kind: _mostly(st.just(name)),
            **{f: _mostly(_valid(t)) for f, t in table.items()}}
    if kind == "cmd":
        body["id"] = _mostly(st.text(min_size=1, max_size=4))
    drop = st.sampled_from([None] * len(body) + list(body))
    whole = st.fixed_dictionaries(body, optional={"extra": leaves})
    return st.tuples(whole, drop).map(lambda wd: {k: v for k, v in wd[0].items() if k != wd[1]})


messages = st.sampled_from(kinds_and_names).flatmap(_message)


json_values = st.recursive(
    leaves,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_random_bytes(data):
    _check_line(data)


@settings(max_examples=150, deadline=None)
@given(json_values)
def test_fuzz_random_json(value):
    _check_line(json.dumps(value).encode())
    _check_line(json.dumps(value, ensure_ascii=False))


@settings(max_examples=150, deadline=None)
@given(messages)
def test_fuzz_message_shaped_json(obj):
    _check_line(json.dumps(obj).encode() + b"\n")


@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(max_size=80) | messages.map(lambda o: json.dumps(o).encode()), max_size=6))
def test_fuzz_stream(chunks):
    stream = io.BytesIO(b"\n".join(chunks))
    for item in read_message_lines(stream, max_bytes=64):
        _check_decoded(decode_command(item, max_bytes=64))


def test_schema_is_documented():
    doc = P.__doc__ or ""
    for table in SCHEMA.values():
        for name, fields in table.items():
            assert f"``{name}``" in doc
            for f in fields:
                assert f in P.describe_schema()
    assert '{"v": 1, "cmd": "generate"' in doc and '{"v": 1, "event": "progress"' in doc
    line = doc.split("\n\n    ", 1)[1].split("\n", 1)[0]  # the command example decodes
    assert isinstance(decode_command(line), Command)


def test_import_is_torch_and_numpy_free():
    code = ("import calibstudio.engine.protocol, sys; "
            "assert 'torch' not in sys.modules and 'numpy' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
