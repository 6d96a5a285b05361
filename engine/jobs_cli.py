"""``calibstudio calibrate | generate | compare``: the engine's jobs from the command line.

The parsers live in ``calibstudio.cli``; these run a parsed job with a progress bar and print a
short summary. Outputs are written atomically, so an interrupted job leaves no partial file.
"""

from __future__ import annotations

import argparse
import json
from importlib import resources
from pathlib import Path

from calibstudio.engine.atomic import writable_destination
from calibstudio.engine.calibrate import CalibrationSettings, calibrate
from calibstudio.engine.export import check_mp4_path, json_safe, side_by_side, write_mp4, write_report
from calibstudio.engine.generate import GenerationSettings, compare, generate
from calibstudio.engine.models.registry import LoadedModel, load_model
from calibstudio.engine.profile import Profile
from calibstudio.engine.progress import tqdm_progress


def read_prompts(path: str | None, bundled: str = "calibration_prompts.txt") -> list[str]:
    """One prompt a line (blank lines and ``#`` comments skipped); the bundled set ``bundled`` when ``path`` is None."""
    if path is None:
        text = resources.files("calibstudio.resources").joinpath(bundled).read_text()
    else:
        file = Path(path)
        if not file.is_file():
            raise ValueError(f"prompt file {file} does not exist")
        text = file.read_text()
    prompts = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if not prompts:
        raise ValueError(f"prompt file {path} has no prompts (one prompt a line)")
    return prompts


def calibration_prompts(model: LoadedModel, path: str | None = None, limit: int | None = None) -> list[str]:
    """What a calibration runs on: the prompts in ``path`` (the first ``limit`` of them), else the model's bundled
    set, by default cut to as many as its shipped profile was calibrated on (``defaults.calibration_prompts``:
    2 for the demo model), so a default calibration reproduces that profile in its time (the issue's 5 minutes)."""
    prompts = read_prompts(path, model.prompts)
    if limit is None and path is None:
        limit = model.defaults.get("calibration_prompts")
    return prompts[: int(limit)] if limit else prompts


def _size(args: argparse.Namespace, model: LoadedModel) -> dict:
    d = model.defaults
    return {key: getattr(args, key) if getattr(args, key) is not None else d[key]
            for key in ("height", "width", "frames", "steps", "guidance_scale")}


def run_calibrate(args: argparse.Namespace) -> int:
    writable_destination(args.out)
    model = load_model(args.model, args.device)
    prompts = calibration_prompts(model, args.prompts, args.limit)
    settings = CalibrationSettings(**_size(args, model), bins=args.bins, seed=args.seed, block=args.block,
                                   negative_prompt=args.negative_prompt, recommended_threshold=model.threshold(None),
                                   error_bound=model.error_bound(args.error_bound), error_prompts=args.error_prompts,
                                   dense_steps=model.dense_steps(None))
    with calibrate(model.pipe, model.adapter, prompts, settings, args.out, tqdm_progress()) as profile:
        print(f"wrote {args.out}: {profile.meta.nq}x{profile.meta.nk} blocks, density "
              + ", ".join(f"{profile.density(t):.1%} at {t}" for t in (0.95, 0.99, 0.999)))
        if (report := profile.meta.calibration.get("error_bound")) is not None:
            m = profile.meta
            print(f"error bound {report['bound']}: raised the threshold of {len(report['floored_heads'])} of "
                  f"{m.bins * m.layers * m.heads} (step bin, layer, head)s")
    return 0


def _generation(args: argparse.Namespace, model: LoadedModel) -> GenerationSettings:
    size = _size(args, model)
    return GenerationSettings(prompt=args.prompt, **size, seed=args.seed,
                              negative_prompt=args.negative_prompt, threshold=model.threshold(args.threshold),
                              warmup_steps=args.warmup, dense_steps=model.dense_steps(args.dense_steps, size["steps"]),
                              compile=args.compile)


def run_generate(args: argparse.Namespace) -> int:
    check_mp4_path(args.out)
    model = load_model(args.model, args.device)
    profile = Profile.open(args.profile) if args.profile else None
    clip = generate(model.pipe, model.adapter, _generation(args, model), profile, tqdm_progress(), args.backend)
    write_mp4(args.out, clip.frames)
    print(f"wrote {args.out}: {len(clip.frames)} frames, {sum(clip.step_ms) / 1e3:.1f} s in "
          f"{len(clip.step_ms)} steps ({'sparse' if profile else 'dense'})")
    return 0


def run_compare(args: argparse.Namespace) -> int:
    out = Path(args.out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out-dir {out} is a file; name a folder for the clips and the report")
    model = load_model(args.model, args.device)
    with Profile.open(model.shipped_profile(args.profile)) as profile:
        result = compare(model.pipe, model.adapter, _generation(args, model), profile, tqdm_progress(), args.backend)
    out.mkdir(parents=True, exist_ok=True)
    write_mp4(out / "dense.mp4", result.dense.frames)
    write_mp4(out / "sparse.mp4", result.sparse.frames)
    write_mp4(out / "side_by_side.mp4", side_by_side(result.dense.frames, result.sparse.frames))
    report = result.report()
    write_report(out / "report.json", report)
    summary = {key: report[key] for key in ("speedup", "psnr", "ssim", "density")}
    print(json.dumps(json_safe(summary)))  # PSNR of identical clips: null, as in the report file
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from calibstudio.engine.models.demo.evaluate import run

    return run(args)
