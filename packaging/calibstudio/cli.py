"""The ``calibstudio`` command: one parser for every face of the tool.

Subcommands import their implementation lazily, so ``calibstudio profile ...`` and ``--help`` stay
fast and torch-free.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from calibstudio import __version__

if TYPE_CHECKING:
    from calibstudio.engine.profile import Profile

# Benchmarks: name -> (help, module with a ``main(argv) -> int``).
_BENCHES = {
    "profile": ("size and speed of the profile format at Wan-14B 720p scale", "calibstudio.engine.bench_profile"),
    "kernels": ("block-sparse attention kernels vs dense and peers", "calibstudio.kernels.bench"),
    "e2e": ("one Wan-14B-shaped transformer step, dense vs sparse, eager and compiled", "calibstudio.engine.bench_e2e"),
}


class CliError(Exception):
    """A user-facing failure: printed as one line, exit status 1."""


def _engine(args: argparse.Namespace) -> int:
    try:
        from calibstudio.engine.server import serve_stdio
    except ImportError as error:
        raise CliError(f"the engine needs torch and diffusers ({error}); install 'calibstudio[engine]'") from None
    return serve_stdio(args.model, args.device, Path(args.jobs_dir) if args.jobs_dir else None, args.remote)


def _bench(args: argparse.Namespace) -> int:
    module = _BENCHES[args.bench][1]
    try:
        entry = importlib.import_module(module)
    except ImportError as error:
        raise CliError(f"bench {args.bench} is not available: {error}") from None
    return int(entry.main(list(args.bench_args)))


def _studio(args: argparse.Namespace) -> int:
    if (not args.screenshot and sys.platform.startswith("linux")
            and not any(os.environ.get(name) for name in ("QT_QPA_PLATFORM", "DISPLAY", "WAYLAND_DISPLAY"))):
        raise CliError("studio: no display (DISPLAY, WAYLAND_DISPLAY and QT_QPA_PLATFORM are unset); "
                       "run it on a desktop, or render offscreen with --screenshot PNG")
    try:
        studio = importlib.import_module("calibstudio.app.studio")
        importlib.import_module("PySide6.QtWidgets")
        importlib.import_module("pyqtgraph")
    except ImportError as error:
        raise CliError(f"the studio needs PySide6 and pyqtgraph ({error}); "
                       f"install them with: pip install 'calibstudio[studio]'") from None
    argv = [f"--{name}={value}" for name in ("profile", "screenshot", "settings", "threshold", "bin", "layer", "head")
            if (value := getattr(args, name)) is not None]
    return int(studio.main(argv))


def _open_profile(path: str) -> Profile:
    from calibstudio.engine.profile import Profile, ProfileError

    try:
        return Profile.open(path)
    except ProfileError as error:
        raise CliError(str(error)) from None


def _profile_info(args: argparse.Namespace) -> int:
    from calibstudio.engine.profile import summarise

    with _open_profile(args.file) as profile:
        summary = summarise(profile)
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    grid, blocks = summary["grid"], summary["blocks"]
    print(f"profile   {summary['path']} ({summary['size_bytes'] / 2**20:.1f} MiB)")
    print(f"model     {summary['model'].get('name', '?')} ({summary['model'].get('class', '?')})")
    print(f"grid      {grid['frames']} x {grid['height']} x {grid['width']} tokens = {grid['tokens']} "
          f"(order {grid['order']})")
    print(f"blocks    {blocks['nq']} x {blocks['nk']} of {blocks['query']} x {blocks['key']} tokens")
    print(f"steps     {summary['steps']} in {len(summary['step_bins'])} bins: "
          + ", ".join(f"{a}-{b - 1}" for a, b in summary["step_bins"]))
    print(f"layers    {summary['layers']}, heads {summary['heads']}")
    print(f"threshold {summary['threshold_range'][0]} .. {summary['threshold_range'][1]}")
    print("density   " + ", ".join(f"{d:.1%} at {t}" for t, d in summary["density"].items()))
    prompts = summary["calibration"].get("prompts", [])
    if prompts:
        print(f"prompts   {len(prompts)}: {prompts[0]!r}{' ...' if len(prompts) > 1 else ''}")
    return 0


def _profile_show(args: argparse.Namespace) -> int:
    from calibstudio.engine.profile import ProfileError

    with _open_profile(args.file) as profile:
        meta = profile.meta
        threshold = args.threshold if args.threshold is not None else (meta.recommended_threshold or 0.999)
        try:
            densities = profile.densities(threshold)
            mean, worst = profile.retained(threshold)
            effective = profile.effective_threshold(threshold)
        except ProfileError as error:
            raise CliError(str(error)) from None
        bins = range(meta.bins) if args.bin is None else [args.bin]
        if args.bin is not None and not 0 <= args.bin < meta.bins:
            raise CliError(f"--bin {args.bin} is outside 0..{meta.bins - 1}")
        weights = [meta.step_bins[b][1] - meta.step_bins[b][0] for b in bins]
        pick = list(bins)
        layer_head = sum(densities[b] * w for b, w in zip(pick, weights, strict=True)) / sum(weights)
        retained_mean = float(mean[pick].mean())
        retained_worst = float(worst[pick].min())
        raised = sorted({(layer, head) for (b, layer, head), floor in meta.threshold_floors.items()
                         if b in pick and floor > effective})
        report = {
            "threshold": threshold,
            "effective_threshold": effective,
            "bins": pick,
            "density": float(layer_head.mean()),
            "density_per_layer_head": layer_head.round(4).tolist(),
            "retained_mean": retained_mean,
            "retained_worst": retained_worst,
            "raised_by_error_bound": [list(pair) for pair in raised],  # [layer, head]: tau raised in a shown bin
        }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    scope = "all bins (step-weighted)" if args.bin is None else f"bin {args.bin} (steps {meta.step_bins[args.bin]})"
    print(f"threshold {threshold} (applied {effective:.6f}), {scope}")
    print(f"density {report['density']:.1%}; retained mass mean {retained_mean:.5f}, worst prompt {retained_worst:.5f}")
    print("density % per layer (rows) and head (columns):")
    print(("layer " + " ".join(f"{h:>4} " for h in range(meta.heads))).rstrip())
    for layer, row in enumerate(layer_head):
        print((f"{layer:>5} " + " ".join(f"{100 * d:4.0f}" + ("*" if (layer, h) in raised else " ")
                                        for h, d in enumerate(row))).rstrip())
    if raised:
        print("* the error bound raised this head's threshold above the applied one (in a shown bin)")
    return 0


def _profile_synthetic(args: argparse.Namespace) -> int:
    from calibstudio.engine.profile import ProfileError
    from calibstudio.engine.synthetic import write_synthetic_profile

    try:
        path = write_synthetic_profile(args.out, tuple(args.grid), args.layers, args.heads, args.bins, args.steps,
                                       block=args.block, seed=args.seed)
    except ProfileError as error:
        raise CliError(str(error)) from None
    print(f"wrote {path}")
    return 0


def _job(name: str) -> Callable[[argparse.Namespace], int]:
    """Run ``calibstudio.engine.jobs_cli.run_<name>``; engine errors become one-line CLI errors."""

    def run(args: argparse.Namespace) -> int:
        try:
            from calibstudio.engine import jobs_cli
        except ImportError as error:
            raise CliError(f"the engine needs torch and diffusers ({error}); install 'calibstudio[engine]'") from None
        from calibstudio.engine.models.base import ModelLoadError
        from calibstudio.engine.profile import ProfileError
        from calibstudio.engine.progress import Cancelled

        try:
            return getattr(jobs_cli, f"run_{name}")(args)
        except (ModelLoadError, ProfileError, ValueError) as error:
            raise CliError(str(error)) from None
        except Cancelled:
            raise KeyboardInterrupt from None

    return run


def _job_parser(commands: argparse._SubParsersAction, name: str, text: str) -> argparse.ArgumentParser:
    """Options every model job shares: model, size, steps, seed, device."""
    job = commands.add_parser(name, help=text, description=text + ".")
    job.add_argument("--model", default="demo",
                     help="'demo' (the bundled model), a local diffusers Wan folder, a demo model folder (what "
                          "the demo's training exports), or 'tiny' (random weights, for smoke tests) (default: demo)")
    job.add_argument("--height", type=int, help="clip height in pixels (default: the model's)")
    job.add_argument("--width", type=int, help="clip width in pixels (default: the model's)")
    job.add_argument("--frames", type=int,
                     help="frames: 4k+1 for Wan, even for the demo model (default: the model's)")
    job.add_argument("--steps", type=int, help="denoising steps (default: the model's)")
    _guidance_option(job)
    job.add_argument("--negative-prompt", default="", help="negative prompt")
    job.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    job.add_argument("--device", help="cuda or cpu (default: cuda when available)")
    job.set_defaults(run=_job(name))
    return job


MODEL_THRESHOLD = "the model's recommended one: 0.9 for the demo model, 0.999 for Wan"


def _threshold_option(parser: argparse.ArgumentParser, default: float | str) -> None:
    """``--threshold``; a string default names a default that the job resolves (the option stays None)."""
    parser.add_argument("--threshold", "-t", type=float, default=None if isinstance(default, str) else default,
                        help=f"retained-mass threshold in 0.90..0.9999 (default: {default})")


def _guidance_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--guidance-scale", dest="guidance_scale", type=float,
                        help="classifier-free guidance scale (default: the model's)")


def _backend_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", default="auto", help="attention backend: auto, fa4, triton, flex, cpu")


def _dense_steps_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dense-steps", type=int,
                        help="run the first N denoising steps of the sparse clip dense: they decide where things "
                             "are, so this keeps the sparse clip closer to the dense one for less speedup "
                             "(default: the model's: 5 for the bundled demo model, 0 for Wan)")


def _compile_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the transformer: faster steps after a one-off compile (tens of seconds "
                             "on a CPU, a few minutes for Wan on a GPU), which an untimed first step of each of "
                             "dense and sparse pays, so timings and speedups compare compiled steps")


def _sparse_options(job: argparse.ArgumentParser, profile_help: str) -> None:
    job.add_argument("--profile", help=f"calibration profile (.safetensors); {profile_help}")
    _threshold_option(job, MODEL_THRESHOLD)
    _backend_option(job)
    job.add_argument("--warmup", type=int, default=0, help="dense warm-up steps before timing (default 0)")
    _dense_steps_option(job)
    _compile_option(job)
    job.add_argument("--prompt", required=True, help="text prompt")


class _Parser(argparse.ArgumentParser):
    """Options only by their full names: argparse's prefix matching would read ``generate --mode dense`` as
    ``--model dense`` and fail on a model called "dense"; unknown options are named instead."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **{**kwargs, "allow_abbrev": False})


def build_parser() -> argparse.ArgumentParser:
    """The one parser for every subcommand (also used to render ``--help`` in the docs)."""
    parser = _Parser(
        prog="calibstudio",
        description="Calibrated block-sparse attention for text-to-video diffusion transformers: "
                    "calibrate once, inspect the masks, generate faster.")
    parser.add_argument("--version", action="version", version=f"calibstudio {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    engine = commands.add_parser(
        "engine", help="run the engine server (JSON lines on stdin/stdout)",
        description="Run the engine server: JSON-lines commands on stdin, events on stdout, logs on stderr. "
                    "The studio starts it; it also runs over ssh on a GPU box (add --remote there).")
    engine.add_argument("--model", default="demo", help="model loaded on the first job (default: demo)")
    engine.add_argument("--device", help="cuda or cpu (default: cuda when available)")
    engine.add_argument("--jobs-dir", help="where job folders go (default: a new temporary folder)")
    engine.add_argument("--remote", action="store_true", help="send previews and masks inline (base64)")
    engine.set_defaults(run=_engine)

    studio = commands.add_parser("studio", help="open the studio: heatmaps, threshold slider, side-by-side previews",
                                 description="Open the studio on a profile (no engine needed for heatmaps and the "
                                             "threshold). --screenshot renders the window offscreen and exits.")
    studio.add_argument("--profile", help="calibration profile to open (.safetensors)")
    studio.add_argument("--screenshot", metavar="PNG", help="save a PNG of the window (offscreen) and exit")
    studio.add_argument("--settings", metavar="FILE", help="settings file to use instead of the user's")
    _threshold_option(studio, "the last session's, else the recommended one of the model whose profile opens")
    studio.add_argument("--bin", type=int, help="step bin to show")
    studio.add_argument("--layer", type=int, help="layer to show")
    studio.add_argument("--head", type=int, help="head to show")
    studio.set_defaults(run=_studio)

    calibrate = _job_parser(commands, "calibrate",
                            "calibrate a model: measure block attention mass and write a profile")
    calibrate.add_argument("--prompts", help="prompt file, one a line (default: the bundled set)")
    calibrate.add_argument("--limit", type=int,
                           help="use only the first N prompts (default: all of a --prompts file; of the bundled set, "
                                "as many as the model's shipped profile used: 2 for the demo model)")
    calibrate.add_argument("--bins", type=int, default=4, help="step bins (default 4)")
    calibrate.add_argument("--block", type=int, default=128, help="block size in tokens (default 128)")
    calibrate.add_argument("--error-bound", type=float,
                           help="relative attention-output error a head may have: a second dense pass on the first "
                                "--error-prompts prompts measures each head's error at thresholds 0.9-0.999 and "
                                "raises the threshold of the heads that exceed it (default: the model's; off for the "
                                "bundled demo model and Wan; 0 turns the pass off)")
    calibrate.add_argument("--error-prompts", type=int, default=2,
                           help="prompts the error pass runs, one dense generation each (default 2)")
    calibrate.add_argument("--out", required=True, help="profile to write (.safetensors)")
    generate = _job_parser(commands, "generate", "generate a clip, dense or sparse from a profile")
    _sparse_options(generate, "without one the clip is dense")
    generate.add_argument("--out", required=True, help="MP4 to write")
    compare = _job_parser(commands, "compare", "generate dense and sparse clips in lockstep and report the speedup")
    _sparse_options(compare, "default: the one shipped with the model (the demo model has one)")
    compare.add_argument("--out-dir", required=True,
                         help="folder for dense.mp4, sparse.mp4, side_by_side.mp4 and report.json")

    evaluate = commands.add_parser(
        "eval", help="prompt adherence, PSNR/SSIM and speedup of sparse vs dense on captions",
        description="Run dense and sparse (calibrated) generation on each caption of PROMPTS_FILE (one a line) "
                    "with the bundled demo model; print per-attribute prompt adherence (colour, shape, motion "
                    "direction) of both, PSNR and SSIM of sparse vs dense, and the speedup.")
    evaluate.add_argument("prompts", metavar="PROMPTS_FILE", help="captions, one a line")
    evaluate.add_argument("--json", metavar="OUT", help="also write the results as JSON here")
    evaluate.add_argument("--profile", help="calibration profile (default: the one shipped with the demo model)")
    _threshold_option(evaluate, MODEL_THRESHOLD)
    _dense_steps_option(evaluate)
    _guidance_option(evaluate)
    _compile_option(evaluate)
    evaluate.add_argument("--model", default="demo", help="model (default: the bundled demo model)")
    evaluate.add_argument("--seed", type=int, default=0, help="seed of the first caption; caption i uses seed+i")
    evaluate.add_argument("--device", help="cuda or cpu (default: cuda when available)")
    _backend_option(evaluate)
    evaluate.set_defaults(run=_job("eval"))

    bench = commands.add_parser("bench", help="benchmarks that write JSON under docs/benchmarks/",
                                description="Run a benchmark; options after the name go to it "
                                            "(e.g. `calibstudio bench profile --help`).")
    bench.add_argument("bench", choices=sorted(_BENCHES), help="; ".join(f"{k}: {v[0]}" for k, v in _BENCHES.items()))
    bench.add_argument("bench_args", nargs=argparse.REMAINDER, help="options for that benchmark")
    bench.set_defaults(run=_bench)

    profile = commands.add_parser("profile", help="inspect a calibration profile (.safetensors)",
                                  description="Inspect a calibration profile without loading a model.")
    actions = profile.add_subparsers(dest="action", metavar="ACTION", required=True)
    info = actions.add_parser("info", help="summary: model, token grid, blocks, step bins, densities",
                              description="Print a profile's model, token grid, blocks, step bins and densities.")
    info.add_argument("file", help="profile file (.safetensors)")
    info.add_argument("--json", action="store_true", help="print JSON instead of text")
    info.set_defaults(run=_profile_info)
    show = actions.add_parser("show", help="density per layer and head, retained mass, at a threshold",
                              description="Density per layer and head and retained attention mass (mean over "
                                          "calibration prompts and worst prompt) at a retained-mass threshold.")
    show.add_argument("file", help="profile file (.safetensors)")
    _threshold_option(show, "the one recorded in the profile for its model, else 0.999")
    show.add_argument("--bin", type=int, help="one step bin (default: all bins, weighted by their steps)")
    show.add_argument("--json", action="store_true", help="print JSON instead of a table")
    show.set_defaults(run=_profile_show)
    synth = actions.add_parser("synthetic", help="write a synthetic profile with video-attention structure",
                               description="Write a profile of synthetic block mass (local 3-D windows, temporal "
                                           "stripes, sinks) for trying the tools without calibrating a model. "
                                           "Defaults: Wan-2.1-1.3B at 480p/81f.")
    synth.add_argument("out", help="output file (.safetensors)")
    synth.add_argument("--grid", type=int, nargs=3, default=(21, 30, 52), metavar=("F", "H", "W"),
                       help="token grid: frames, height, width (default 21 30 52)")
    synth.add_argument("--layers", type=int, default=30, help="layers (default 30)")
    synth.add_argument("--heads", type=int, default=12, help="heads (default 12)")
    synth.add_argument("--bins", type=int, default=4, help="step bins (default 4)")
    synth.add_argument("--steps", type=int, default=50, help="denoising steps (default 50)")
    synth.add_argument("--block", type=int, default=128, help="block size in tokens (default 128)")
    synth.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    synth.set_defaults(run=_profile_synthetic)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``calibstudio`` command; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except CliError as error:
        print(f"calibstudio: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("calibstudio: interrupted", file=sys.stderr)
        return 130
