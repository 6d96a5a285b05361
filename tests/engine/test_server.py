"""The engine server as the studio drives it: a real subprocess speaking JSON lines."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("diffusers")


class Engine:
    """A ``calibstudio engine`` child process with line-level helpers."""

    def __init__(self, jobs: Path) -> None:
        # the tiny model: jobs take seconds (the default, the demo model, takes a minute per compare here)
        self.process = subprocess.Popen([sys.executable, "-m", "calibstudio", "engine", "--model", "tiny",
                                         "--jobs-dir", str(jobs)],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        assert self.next()["event"] == "ready"

    def send(self, line: str | dict) -> None:
        self.process.stdin.write((line if isinstance(line, str) else json.dumps({"v": 1, **line})).encode() + b"\n")
        self.process.stdin.flush()

    def next(self) -> dict:
        line = self.process.stdout.readline()
        assert line, "the engine closed its output"
        return json.loads(line)

    def until(self, predicate) -> list[dict]:
        events = []
        while True:
            events.append(self.next())
            if predicate(events[-1]):
                return events


@pytest.fixture
def engine(tmp_path):
    engine = Engine(tmp_path / "jobs")
    yield engine
    if engine.process.poll() is None:
        engine.process.kill()


def test_hello_garbage_and_shutdown(engine):
    engine.send({"cmd": "hello", "id": "h"})
    reply = engine.next()
    assert reply["id"] == "h" and reply["payload"]["protocol"] == 1 and reply["payload"]["busy"] is False
    for garbage in ("not json", "\x00\xff", "[1, 2]", '{"v": 1, "cmd": "launch", "id": "x"}', '{"cmd": "hello"}'):
        engine.send(garbage)
        reply = engine.next()
        assert reply["event"] == "error" and reply["message"]
    engine.send({"cmd": "cancel", "id": "c", "job": "nothing"})
    assert engine.next()["code"] == "no_such_job"
    engine.send({"cmd": "shutdown", "id": "s"})
    assert engine.next()["payload"] == {"bye": True}
    assert engine.process.wait(timeout=30) == 0


def test_end_of_input_exits_cleanly(engine):
    engine.process.stdin.close()
    assert engine.process.wait(timeout=30) == 0


def test_cancel_stops_a_job_within_a_step_and_leaves_nothing(engine, tmp_path):
    profile = tmp_path / "never.safetensors"
    engine.send({"cmd": "calibrate", "id": "cal", "profile": str(profile), "prompts": ["a", "b"], "steps": 30,
                 "block": 16})
    engine.until(lambda e: e["event"] == "progress" and e["step"] >= 2)
    engine.send({"cmd": "cancel", "id": "stop", "job": "cal"})
    events = engine.until(lambda e: e["event"] == "error" and e.get("id") == "cal")
    assert {"v": 1, "event": "cancelled", "job": "cal"} in events
    answer = [i for i, e in enumerate(events) if e.get("id") == "stop" and e.get("payload") == {"cancelling": "cal"}]
    assert answer and answer[0] < [e["event"] for e in events].index("cancelled")  # answered before the job ends
    steps = [e["step"] for e in events if e["event"] == "progress"]
    assert len(steps) <= 2, "the job stops at the next step boundary"
    assert events[-1]["code"] == "cancelled"
    assert not profile.exists() and not (tmp_path / "jobs" / "cal").exists()
    engine.send({"cmd": "hello", "id": "still-here"})
    assert engine.next()["id"] == "still-here"


def test_compare_streams_timings_and_previews(engine, tmp_path):
    profile = tmp_path / "tiny.safetensors"
    engine.send({"cmd": "calibrate", "id": "cal", "profile": str(profile), "prompts": ["a red circle"],
                 "bins": 2, "block": 16})
    done = engine.until(lambda e: e["event"] in ("result", "error") and e.get("id") == "cal")[-1]
    assert done["event"] == "result", done
    engine.send({"cmd": "compare", "id": "cmp", "prompt": "a red circle", "seed": 2, "profile": str(profile),
                 "threshold": 0.9})
    engine.send({"cmd": "generate", "id": "busy", "prompt": "x", "seed": 1, "mode": "dense"})
    events = engine.until(lambda e: e["event"] in ("result", "error") and e.get("id") == "cmp")
    assert any(e.get("code") == "busy" and e.get("id") == "busy" for e in events), events
    timings = [e for e in events if e["event"] == "timing"]
    assert [e["step"] for e in timings] == [0, 1, 2, 3]
    assert all(e["dense_ms"] > 0 and e["sparse_ms"] > 0 for e in timings)
    previews = [e for e in events if e["event"] == "preview"]
    assert {e["which"] for e in previews} == {"dense", "sparse"} and Path(previews[0]["frames"]["path"]).is_file()
    result = events[-1]["payload"]
    assert result["speedup"] > 0 and Path(result["side_by_side"]).is_file()
    engine.send({"cmd": "get_mask", "id": "m", "bin": 1, "layer": 0, "head": 1, "profile": str(profile)})
    mask = engine.next()
    assert mask["event"] == "mask" and mask["shape"] == [6, 6] and engine.next()["event"] == "result"
    engine.send({"cmd": "get_mask", "id": "m2", "bin": 0, "layer": 0, "head": 0, "profile": str(tmp_path / "no")})
    assert engine.next()["code"] == "bad_profile"
    engine.send({"cmd": "compare", "id": "fast", "prompt": "a red circle", "seed": 2, "profile": str(profile),
                 "threshold": 0.9, "compile": True})
    events = engine.until(lambda e: e["event"] in ("result", "error") and e.get("id") == "fast")
    assert [e["step"] for e in events if e["event"] == "timing"] == [0, 1, 2, 3]  # compiling steps untimed
    report = json.loads(Path(events[-1]["payload"]["report"]).read_text())
    assert report["settings"]["compile"] is True and report["psnr"] == pytest.approx(result["psnr"], abs=0.5)
    engine.send({"cmd": "compare", "id": "d", "prompt": "a red circle", "seed": 2, "profile": str(profile),
                 "dense_steps": 99})
    reply = engine.until(lambda e: e["event"] in ("result", "error"))[-1]
    assert reply["code"] == "bad_request" and "dense steps must be 0.." in reply["message"], reply


def test_a_model_with_a_shipped_profile_compares_without_one(engine):
    engine.send({"cmd": "load_model", "id": "demo", "model": "demo"})
    reply = engine.until(lambda e: e["event"] in ("result", "error"))[-1]
    assert Path(reply["payload"]["defaults"]["profile"]).name == "profile.safetensors"
    assert reply["payload"]["defaults"]["threshold"] == 0.9  # where the demo's diffuse attention gets sparse
    engine.send({"cmd": "load_model", "id": "tiny", "model": "tiny"})
    reply = engine.until(lambda e: e["event"] in ("result", "error"))[-1]
    assert "profile" not in reply["payload"]["defaults"] and reply["payload"]["defaults"]["threshold"] == 0.999
    engine.send({"cmd": "compare", "id": "cmp", "prompt": "a red circle", "seed": 2})
    reply = engine.until(lambda e: e["event"] in ("result", "error"))[-1]
    assert reply["code"] == "bad_request" and "ships no calibration profile" in reply["message"], reply
