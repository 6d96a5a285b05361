"""``calibstudio engine``: the engine server. JSON lines on stdin/stdout (see ``protocol``), logs on stderr.

The main thread reads commands and answers the quick ones at once; jobs (load_model, calibrate,
generate, compare) run one at a time on a worker thread and stream ``progress``, ``timing`` and
``preview`` events. A bad line gets an ``error`` event and the server keeps serving. Every job
writes into its own folder; a cancelled or failed job removes what it wrote, so no partial files
are left. End of input cancels the running job and exits, as ``shutdown`` does.
"""

from __future__ import annotations

import io
import logging
import re
import shutil
import sys
import tempfile
import threading
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np

from calibstudio import __version__
from calibstudio.engine.protocol import (
    PROTOCOL_VERSION,
    Command,
    Event,
    Payload,
    decode_command,
    encode,
    read_message_lines,
)

log = logging.getLogger("calibstudio.engine")
JOBS = ("load_model", "calibrate", "generate", "compare")


class Server:
    """One engine: a model, at most one running job, and the stream of events back to the client."""

    def __init__(self, out: IO[bytes], jobs_dir: Path, model: str, device: str | None, remote: bool) -> None:
        self.out = out
        self.jobs_dir = jobs_dir
        self.model_spec = model
        self.device = device
        self.remote = remote
        self.model: Any = None
        self._write_lock = threading.Lock()
        self._job: threading.Thread | None = None
        self._running = False
        self._progress: Any = None
        self._job_id: str | None = None

    # -- output ------------------------------------------------------------------------------
    def send(self, event: Event) -> None:
        line = encode(event)
        with self._write_lock:
            self.out.write(line)
            self.out.flush()

    # -- the loop ----------------------------------------------------------------------------
    def serve(self, stream: IO[bytes]) -> int:
        self.send(Event("ready", {"engine": f"calibstudio {__version__}", "protocol": PROTOCOL_VERSION}))
        for line in read_message_lines(stream):
            message = decode_command(line)
            if isinstance(message, Event):
                self.send(message)
                continue
            if message.name == "shutdown":
                self._stop_job()
                self.send(message.reply({"bye": True}))
                return 0
            try:
                self.handle(message)
            except Exception as error:  # one command's failure must never end the server
                log.error("command %s failed:\n%s", message.name, traceback.format_exc())
                self.send(message.fail("internal", f"{message.name} failed: {error}"))
        self._stop_job()
        return 0

    def handle(self, command: Command) -> None:
        if command.name == "hello":
            self.send(command.reply({"engine": f"calibstudio {__version__}", "protocol": PROTOCOL_VERSION,
                                     "model": self.model_spec if self.model else None, "busy": self.busy}))
        elif command.name == "cancel":
            job = command.args["job"]
            if self._job_id != job or not self.busy:
                self.send(command.fail("no_such_job", f"no running job {job!r}; nothing to cancel"))
            else:  # answer first: the job's own "cancelled" and error events then always follow the answer
                self.send(command.reply({"cancelling": job}))
                self._progress.cancel()
        elif command.name == "get_mask":
            self.send_mask(command)
        elif command.name in JOBS:
            self.start_job(command)

    @property
    def busy(self) -> bool:
        return self._running

    def _stop_job(self) -> None:
        if self._job is not None and self._job.is_alive():
            self._progress.cancel()
            self._job.join()

    # -- jobs --------------------------------------------------------------------------------
    def start_job(self, command: Command) -> None:
        from calibstudio.engine.progress import Progress

        if self.busy:
            self.send(command.fail("busy", f"job {self._job_id!r} is still running; cancel it or wait"))
            return
        folder = self.jobs_dir / re.sub(r"[^A-Za-z0-9_.-]", "_", command.id)
        if folder.exists():
            self.send(command.fail("bad_field", f"job id {command.id!r} was used before; use a new id"))
            return

        def sink(phase: str, step: int, total: int, eta: float | None) -> None:
            self.send(Event("progress", {"job": command.id, "phase": phase, "step": step, "total": total,
                                         "eta": eta}))

        self._progress, self._job_id = Progress(sink), command.id
        run = getattr(self, f"job_{command.name}")
        self._job = threading.Thread(target=self._run_job, args=(command, folder, run), daemon=True)
        self._running = True
        self._job.start()

    def _run_job(self, command: Command, folder: Path, run: Callable[[Command, Path], dict]) -> None:
        from calibstudio.engine.progress import Cancelled

        folder.mkdir(parents=True)
        try:
            final = [command.reply({"folder": str(folder), **run(command, folder)})]
        except Cancelled:
            shutil.rmtree(folder, ignore_errors=True)
            final = [Event("cancelled", {"job": command.id}),
                     command.fail("cancelled", f"job {command.id} was cancelled; nothing was written")]
        except Exception as error:
            shutil.rmtree(folder, ignore_errors=True)
            log.error("job %s failed:\n%s", command.id, traceback.format_exc())
            final = [command.fail(_error_code(error), str(error))]
        self._running = False  # before the reply: a client may start the next job as soon as it reads it
        for event in final:
            self.send(event)

    def _model(self) -> Any:
        from calibstudio.engine.models.registry import load_model

        if self.model is None:
            log.info("loading model %s", self.model_spec)
            self.model = load_model(self.model_spec, self.device)
        return self.model

    def _settings(self, args: dict, model: Any) -> dict:
        keys = ("height", "width", "frames", "steps", "guidance_scale")
        return {key: args.get(key, model.defaults[key]) for key in keys}

    def job_load_model(self, command: Command, folder: Path) -> dict:
        self._progress.update("load", 0, 1)
        self.model, self.model_spec = None, command.args["model"]
        model = self._model()
        self._progress.update("load", 1, 1)
        defaults: dict[str, Any] = dict(model.defaults)
        if model.available_profile is not None:
            defaults["profile"] = str(model.available_profile)  # compare and sparse generate use it when given none
        return {"model": self.model_spec, "defaults": defaults}

    def job_calibrate(self, command: Command, folder: Path) -> dict:
        from calibstudio.engine.calibrate import CalibrationSettings, calibrate
        from calibstudio.engine.jobs_cli import calibration_prompts

        args, model = command.args, self._model()
        prompts = args.get("prompts") or calibration_prompts(model)
        settings = CalibrationSettings(**self._settings(args, model), bins=args.get("bins", 4),
                                       seed=args.get("seed", 0), block=args.get("block", 128),
                                       recommended_threshold=model.threshold(None),
                                       error_bound=model.error_bound(args.get("error_bound")),
                                       error_prompts=args.get("error_prompts", 2),
                                       dense_steps=model.dense_steps(None))
        with calibrate(model.pipe, model.adapter, prompts, settings, args["profile"], self._progress) as profile:
            return {"profile": str(profile.path), "density": {str(t): profile.density(t) for t in (0.99, 0.999)}}

    def _generation(self, args: dict, model: Any) -> Any:
        from calibstudio.engine.generate import GenerationSettings

        size = self._settings(args, model)
        return GenerationSettings(prompt=args["prompt"], seed=args["seed"], **size,
                                  negative_prompt=args.get("negative_prompt", ""),
                                  threshold=model.threshold(args.get("threshold")),
                                  warmup_steps=args.get("warmup", 0),
                                  dense_steps=model.dense_steps(args.get("dense_steps"), size["steps"]),
                                  compile=bool(args.get("compile", False)))

    def job_generate(self, command: Command, folder: Path) -> dict:
        from calibstudio.engine.export import write_mp4
        from calibstudio.engine.generate import generate
        from calibstudio.engine.profile import Profile

        args, model = command.args, self._model()
        profile = Profile.open(model.shipped_profile(args.get("profile"))) if args["mode"] == "sparse" else None
        clip = generate(model.pipe, model.adapter, self._generation(args, model), profile, self._progress)
        video = write_mp4(folder / "clip.mp4", clip.frames)
        return {"video": str(video), "step_ms": clip.step_ms}

    def job_compare(self, command: Command, folder: Path) -> dict:
        from calibstudio.engine.export import json_safe, side_by_side, write_mp4, write_report
        from calibstudio.engine.generate import compare
        from calibstudio.engine.profile import Profile

        args, model = command.args, self._model()

        def on_step(step: int, dense_ms: float, sparse_ms: float, dense: Any, sparse: Any) -> None:
            self.send(Event("timing", {"job": command.id, "step": step, "dense_ms": dense_ms,
                                       "sparse_ms": sparse_ms}))
            for which, latents in (("dense", dense), ("sparse", sparse)):
                image = model.adapter.preview(latents)
                data = Payload.store(_png(image), folder=None if self.remote else folder / "previews",
                                     name=f"{which}_{step:03d}.png")
                self.send(Event("preview", {"job": command.id, "step": step, "which": which, "frames": data,
                                            "width": int(image.shape[1]), "height": int(image.shape[0])}))

        with Profile.open(model.shipped_profile(args.get("profile"))) as profile:
            result = compare(model.pipe, model.adapter, self._generation(args, model), profile, self._progress,
                             on_step=on_step)
        outputs = {"dense": write_mp4(folder / "dense.mp4", result.dense.frames),
                   "sparse": write_mp4(folder / "sparse.mp4", result.sparse.frames),
                   "side_by_side": write_mp4(folder / "side_by_side.mp4",
                                             side_by_side(result.dense.frames, result.sparse.frames))}
        report = result.report()
        outputs["report"] = write_report(folder / "report.json", report)
        return {**{k: str(v) for k, v in outputs.items()},
                **json_safe({k: report[k] for k in ("speedup", "psnr", "ssim", "density")})}

    # -- masks -------------------------------------------------------------------------------
    def send_mask(self, command: Command) -> None:
        from calibstudio.engine.profile import Profile, ProfileError

        args = command.args
        if "profile" not in args:
            self.send(command.fail("bad_field", "get_mask needs a 'profile' path"))
            return
        try:
            with Profile.open(args["profile"]) as profile:
                heat = profile.heatmap(args["bin"], args["layer"], args["head"])
        except ProfileError as error:
            self.send(command.fail("bad_profile", str(error)))
            return
        buffer = io.BytesIO()
        np.save(buffer, heat.mass)
        folder = None if self.remote else self.jobs_dir / "masks"
        data = Payload.store(buffer.getvalue(), folder=folder, name=f"{command.id}.npy")
        self.send(Event("mask", {"id": command.id, "data": data, "shape": list(heat.mass.shape),
                                 "dtype": "float32"}))
        self.send(command.reply({"shape": list(heat.mass.shape)}))


def _png(image: np.ndarray) -> bytes:
    import imageio.v3 as iio

    return iio.imwrite("<bytes>", image, extension=".png")


def _error_code(error: Exception) -> str:
    from calibstudio.engine.models.base import ModelLoadError
    from calibstudio.engine.profile import ProfileError

    if isinstance(error, ModelLoadError):
        return "bad_model"
    if isinstance(error, ProfileError):
        return "bad_profile"
    if isinstance(error, ValueError | KeyError | TypeError):
        return "bad_request"
    return "internal"


def serve_stdio(model: str = "demo", device: str | None = None, jobs_dir: Path | None = None,
                remote: bool = False) -> int:
    """Serve on this process's stdin/stdout until ``shutdown`` or end of input."""
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s engine: %(message)s")
    jobs_dir = jobs_dir or Path(tempfile.mkdtemp(prefix="calibstudio-jobs-"))
    jobs_dir.mkdir(parents=True, exist_ok=True)
    log.info("job folders in %s", jobs_dir)
    return Server(sys.stdout.buffer, jobs_dir, model, device, remote).serve(sys.stdin.buffer)
