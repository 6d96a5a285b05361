"""Render every studio view to PNG, for the docs and for people reviewing the GUI.

``python -m calibstudio.app.screenshots OUTDIR [--profile FILE]`` writes ``main_window.png``,
``heatmap.png`` (mask outline and dimmed dropped blocks), ``overview.png``, ``small_multiples.png``
and ``threshold.png``. Without ``--profile`` it first writes a Wan-2.1-1.3B-sized synthetic profile
(480p/81f: 21 x 30 x 52 tokens, 30 layers x 12 heads, about a minute on 2 cores).

Then (unless ``--no-engine``) it starts a real engine, calibrates ``--model`` (unless it ships a
profile, as the demo model does) and runs one compare through the studio exactly as a user would,
and renders what that run produced:
``jobs.png`` (the job panel mid-compare, progress and ETA), ``previews.png`` (dense and sparse
clips with the measured PSNR/SSIM), ``speed.png`` (measured per-step times and speedup) and
``studio_compare.png`` (the whole window after the run). Every number in them was measured.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

# (file name, widget size); each view is shown alone, the way a test shows it
VIEWS = {
    "main_window": (1600, 1000),
    "heatmap": (1100, 960),
    "overview": (560, 820),
    "small_multiples": (1500, 900),
    "threshold": (460, 330),
}


def _offscreen_app(out_dir: str | os.PathLike[str]):
    """The (offscreen, dark) QApplication the renders draw in, and the output folder, created."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtWidgets import QApplication

    from calibstudio.app.studio import install_message_filter
    from calibstudio.app.theme import apply_dark_theme

    install_message_filter()
    app = QApplication.instance() or QApplication(["calibstudio-screenshots"])
    apply_dark_theme(app)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return app, out


def render(profile_path: str | os.PathLike[str], out_dir: str | os.PathLike[str], layer: int | None = None,
           head: int = 0, threshold: float = 0.999) -> list[Path]:
    """Render each view of ``profile_path`` into ``out_dir``; returns the PNG paths."""
    from PySide6.QtCore import QPointF

    from calibstudio.app.heatmap_view import HeatmapView
    from calibstudio.app.main_window import MainWindow
    from calibstudio.app.overview_view import OverviewView
    from calibstudio.app.profile_model import ProfileModel
    from calibstudio.app.settings import open_settings
    from calibstudio.app.small_multiples import SmallMultiplesView
    from calibstudio.app.threshold_panel import ThresholdPanel

    app, out = _offscreen_app(out_dir)
    model = ProfileModel(threshold)
    model.open(profile_path)
    meta = model.profile.meta
    model.select(bin_index=0, layer=meta.layers // 2 if layer is None else layer, head=head)

    written = []
    with tempfile.TemporaryDirectory() as scratch:
        settings = open_settings(str(Path(scratch) / "settings.ini"))
        for name, size in VIEWS.items():
            if name == "main_window":
                widget = MainWindow(settings, model, persist=False)
                widget._on_profile()  # the profile was opened before the window existed
            elif name == "heatmap":
                widget = HeatmapView(model)
                widget.dim_check.setChecked(True)
            elif name == "overview":
                widget = OverviewView(model)
            elif name == "small_multiples":
                widget = SmallMultiplesView(model)
            else:
                widget = ThresholdPanel(model)
            widget.resize(*size)
            widget.show()
            for _ in range(5):
                app.processEvents()
            if name == "heatmap":  # show the hover readout for a block next to the diagonal
                query = meta.nq // 2
                widget.graphics.scene().sigMouseMoved.emit(widget.plot.vb.mapViewToScene(QPointF(query + 1.5,
                                                                                                 query + 0.5)))
            path = out / f"{name}.png"
            if not widget.grab().save(str(path), "PNG"):
                raise OSError(f"could not write {path}")
            written.append(path)
            widget.close()
            widget.deleteLater()
            app.processEvents()
    return written


# rendered in this order: the window first, then panels taken out of it and shown alone
ENGINE_VIEWS = {"studio_compare": (1600, 1000), "jobs": (0, 0), "previews": (1100, 560), "speed": (1000, 560)}
# job settings per model (None: the engine's default). The tiny model's default clip is 96 tokens (6x6 blocks of
# 16); its steps take milliseconds, so more of them make the sums less hostage to one hiccup of the machine.
RUNS: dict[str, dict[str, int | None]] = {
    "tiny": {"block": 16, "bins": 2, "width": None, "height": None, "frames": None, "steps": 12},
    "demo": {"block": 128, "bins": 4, "width": None, "height": None, "frames": None, "steps": None},
}
JOB_TIMEOUT_S = 3600.0


def _wait(app, condition, what: str, timeout_s: float = JOB_TIMEOUT_S) -> None:
    """Run the event loop until ``condition()``; RuntimeError naming ``what`` on timeout."""
    import time

    from PySide6.QtCore import QEventLoop

    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout_s:g} s waiting for {what}")
        app.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, 50)
        time.sleep(0.02)  # processEvents returns at once when idle: do not spin a core the engine needs


def render_engine_views(out_dir: str | os.PathLike[str], model: str = "tiny", threshold: float = 0.9,
                        prompt: str = "a red circle moves left over a blue background", seed: int = 2) -> list[Path]:
    """Calibrate ``model`` and run one compare on a real engine through the studio; render the job views."""
    from calibstudio.app.engine_client import EngineClient, default_command
    from calibstudio.app.main_window import MainWindow
    from calibstudio.app.settings import open_settings

    app, out = _offscreen_app(out_dir)
    with tempfile.TemporaryDirectory() as scratch:
        engine = EngineClient([*default_command(), "--jobs-dir", str(Path(scratch) / "jobs")])
        window = MainWindow(open_settings(str(Path(scratch) / "settings.ini")), engine=engine, persist=False,
                            start_engine=True)
        try:
            return _run_and_grab(app, window, out, Path(scratch), model, threshold, prompt, seed)
        finally:
            engine.stop(timeout_ms=1000)
            window.close()
            window.deleteLater()
            app.processEvents()


def _run_and_grab(app, window, out: Path, scratch: Path, model: str, threshold: float, prompt: str,
                  seed: int) -> list[Path]:
    """Drive the job panel as a user would (model, calibrate, compare), then grab each job view."""
    from PySide6.QtCore import QRect

    engine, panel = window.engine, window.job_panel
    window.resize(*ENGINE_VIEWS["studio_compare"])
    window.show()
    failures: list[str] = []
    window.runner.job_failed.connect(lambda kind, code, message: failures.append(f"{kind}: {message}"))
    panel.set_model(model)  # before the engine is ready: it loads this model first
    _wait(app, lambda: engine.state == "stopped" or failures or
          (window.runner.loaded_model == model and not window.runner.busy), f"the engine with model {model}")
    if engine.state == "stopped" or failures:
        raise RuntimeError(f"the engine did not load {model}: {engine.last_reason or failures[0]}")
    run = RUNS.get(model, RUNS["demo"])
    shipped = window.runner.model_defaults.get("profile")  # the bundled model's profile: compare at once
    if not shipped:
        panel.profile_edit.setText(str(scratch / f"{Path(model).name}.safetensors"))
        panel.block_box.setCurrentText(str(run["block"]))
        panel.bins_box.setValue(int(run["bins"] or 4))
    for key, box in (("width", panel.width_box), ("height", panel.height_box), ("frames", panel.frames_box),
                     ("steps", panel.steps_box)):
        if run[key] is not None:
            box.setValue(int(run[key]))
    panel.prompt_edit.setPlainText(prompt)
    panel.seed_box.setValue(seed)
    mid_job: list = []  # the job panel half-way through the compare: progress bar and ETA

    def grab_mid_compare(phase: str, step: int, total: int, _eta: object) -> None:
        if phase == "compare" and step == max(total // 2, 1) and not mid_job:
            bottom = panel.message.geometry().bottom() + 12  # the form down to the messages, not the stretch
            mid_job.append(panel.grab(QRect(0, 0, panel.width(), bottom)))

    window.runner.job_progress.connect(grab_mid_compare)
    for kind in ("compare",) if shipped else ("calibrate", "compare"):
        if kind == "compare":
            window.model.set_threshold(threshold)
            window.model.select(layer=0, head=0)
        if failures or not panel.run(kind):
            raise RuntimeError(f"could not {kind}: {failures or panel.message.text()}")
        _wait(app, lambda: not window.runner.busy, kind)
        if failures:
            raise RuntimeError(failures[0])
    _wait(app, lambda: len(window.previews.clips) == 2 or "cannot" in window.previews.status.text(), "the clips")
    window.previews.show_frame(window.previews.frame_count // 2)
    written = []
    for name, size in ENGINE_VIEWS.items():
        if name == "jobs":
            pixmap = mid_job[0] if mid_job else panel.grab()
        elif name == "studio_compare":
            window.show_tab(window.previews)
            app.processEvents()
            pixmap = window.grab()
        else:
            widget = window.previews if name == "previews" else window.speed
            widget.setParent(None)  # shown alone at a fixed size, as a test shows a panel
            widget.resize(*size)
            widget.show()
            for _ in range(5):
                app.processEvents()
            pixmap = widget.grab()
        path = out / f"{name}.png"
        if not pixmap.save(str(path), "PNG"):
            raise OSError(f"could not write {path}")
        written.append(path)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``OUTDIR [--profile FILE] [--layer L] [--head H] [--threshold T] [--model M] [--no-engine]``."""
    parser = argparse.ArgumentParser(prog="python -m calibstudio.app.screenshots", description=__doc__.split("\n")[0])
    parser.add_argument("out_dir", help="folder for the PNGs")
    parser.add_argument("--profile", help="profile to show (default: a Wan-1.3B-sized synthetic one)")
    parser.add_argument("--layer", type=int, help="layer to show (default: the middle one)")
    parser.add_argument("--head", type=int, default=0, help="head to show (default 0)")
    parser.add_argument("--threshold", type=float, default=0.999, help="threshold (default 0.999)")
    parser.add_argument("--model", default="tiny",
                        help="model for the engine views (default: tiny, seconds on a CPU; the demo model "
                             "uses its shipped profile, a compare takes about a minute there)")
    parser.add_argument("--no-engine", action="store_true", help="skip the views that need an engine run")
    args = parser.parse_args(argv)
    from calibstudio.engine.profile import ProfileError

    try:
        if args.profile:
            paths = render(args.profile, args.out_dir, args.layer, args.head, args.threshold)
        else:
            from calibstudio.engine.synthetic import write_synthetic_profile

            with tempfile.TemporaryDirectory() as scratch:
                profile = write_synthetic_profile(Path(scratch) / "wan-1.3b-480p-synthetic.safetensors",
                                                  (21, 30, 52), layers=30, heads=12, bins=4, steps=50)
                paths = render(profile, args.out_dir, args.layer, args.head, args.threshold)
        if not args.no_engine:
            paths += render_engine_views(args.out_dir, args.model)
    except (ProfileError, OSError, RuntimeError) as error:
        print(f"screenshots: error: {error}", file=sys.stderr)
        return 1
    for path in paths:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
