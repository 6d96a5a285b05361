"""A stand-in engine for the studio's error paths: speaks the real protocol, misbehaves on request.

``python fake_engine.py SCENARIO [JOBS_DIR [SHIPPED_PROFILE]]``; every command it reads is echoed to stderr as
``got <cmd>`` so tests can see what the studio sent. Scenarios:

- ``ok``: serves load_model (every model but tiny "ships" SHIPPED_PROFILE when one is given), compare (a few
  slow steps with timing/preview events, real MP4s and a report in JOBS_DIR) and cancel; a compare whose
  prompt contains "crash" exits mid-job (code 3).
- ``garbage``: like ``ok`` but writes lines that are not protocol messages right after ``ready``.
- ``slow``: sleeps before ``ready`` (for the start timeout).
- ``hang``: sends ``ready``, then reads commands and never answers.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

import imageio.v3 as iio
import numpy as np

from calibstudio.engine.protocol import Command, Event, Payload, decode_command, encode, read_message_lines

STEPS = 4
STEP_SECONDS = 0.15
FRAMES, HEIGHT, WIDTH = 6, 32, 48


def send(event: Event) -> None:
    sys.stdout.buffer.write(encode(event))
    sys.stdout.buffer.flush()


def clip(seed: int) -> np.ndarray:
    """A small moving gradient (so clips have visible frames)."""
    t = np.arange(FRAMES)[:, None, None]
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH]
    red = (x[None] * 5 + t * 20 + seed) % 256
    return np.stack([red, np.broadcast_to(y[None] * 7, red.shape), np.full_like(red, 90)], -1).astype(np.uint8)


def compare(command: Command, jobs: Path, cancelled: threading.Event) -> None:
    folder = jobs / command.id
    folder.mkdir(parents=True)
    for step in range(STEPS):
        if cancelled.is_set():
            send(Event("cancelled", {"job": command.id}))
            send(command.fail("cancelled", f"job {command.id} was cancelled; nothing was written"))
            return
        send(Event("progress", {"job": command.id, "phase": "compare", "step": step, "total": STEPS,
                                "eta": None if step == 0 else STEP_SECONDS * (STEPS - step)}))
        if step == 2 and "crash" in command.args["prompt"]:
            print("fake engine: simulated crash in the middle of a compare", file=sys.stderr, flush=True)
            os._exit(3)
        time.sleep(STEP_SECONDS)
        send(Event("timing", {"job": command.id, "step": step, "dense_ms": 20.0 + step, "sparse_ms": 10.0 + step}))
        for which in ("dense", "sparse"):
            png = iio.imwrite("<bytes>", clip(step)[0], extension=".png")
            send(Event("preview", {"job": command.id, "step": step, "which": which, "frames": Payload.inline(png),
                                   "width": WIDTH, "height": HEIGHT}))
    outputs = {}
    for which, seed in (("dense", 0), ("sparse", 3)):
        outputs[which] = str(folder / f"{which}.mp4")
        iio.imwrite(outputs[which], clip(seed), plugin="FFMPEG", fps=8, codec="libx264", macro_block_size=1)
    outputs["side_by_side"] = outputs["dense"]
    report = {"speedup": 2.0, "psnr": 30.0, "ssim": 0.9, "density": 0.5}
    (folder / "report.json").write_text(json.dumps(report))
    send(command.reply({"folder": str(folder), **outputs, "report": str(folder / "report.json"), **report}))


def main() -> int:
    scenario = sys.argv[1]
    jobs = Path(sys.argv[2]) if len(sys.argv) > 2 else Path.cwd() / "fake-jobs"
    shipped = {"profile": sys.argv[3], "threshold": 0.9} if len(sys.argv) > 3 else {}  # as the demo model
    if scenario == "slow":
        time.sleep(30)
    send(Event("ready", {"engine": f"fake engine ({scenario})"}))
    if scenario == "garbage":
        sys.stdout.buffer.write(b"this is not json\n\xff\xfe\n{\"v\": 1, \"event\": \"launch\"}\n")
        sys.stdout.buffer.flush()
    cancelled = threading.Event()
    job: threading.Thread | None = None
    running: str | None = None
    for line in read_message_lines(sys.stdin.buffer):
        message = decode_command(line)
        if isinstance(message, Event):
            send(message)
            continue
        print(f"got {message.name} {json.dumps(message.args)}", file=sys.stderr, flush=True)
        if scenario == "hang":
            continue
        if message.name == "shutdown":
            send(message.reply({"bye": True}))
            return 0
        if message.name == "hello":
            send(message.reply({"engine": "fake", "busy": job is not None and job.is_alive()}))
        elif message.name == "load_model":
            send(Event("progress", {"job": message.id, "phase": "load", "step": 0, "total": 1, "eta": None}))
            send(message.reply({"model": message.args["model"],
                                "defaults": {"height": HEIGHT, "width": WIDTH, "frames": 9, "steps": STEPS,
                                             **({} if message.args["model"] == "tiny" else shipped)}}))
        elif message.name == "compare":
            cancelled.clear()
            running = message.id
            job = threading.Thread(target=compare, args=(message, jobs, cancelled), daemon=True)
            job.start()
        elif message.name == "cancel":
            if message.args["job"] == running:
                cancelled.set()
                send(message.reply({"cancelling": running}))
            else:
                send(message.fail("no_such_job", "nothing to cancel"))
        else:
            send(message.fail("bad_request", f"the fake engine does not do {message.name}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
