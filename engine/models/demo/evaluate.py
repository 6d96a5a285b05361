"""``calibstudio eval PROMPTS_FILE``: prompt adherence, quality and speed of sparse vs dense on the demo model.

Each caption runs as one compare job (dense and sparse trajectories from one seed, in lockstep, so
their times are taken under the same machine conditions); both clips are scored against the
caption by the adherence checker, and the sparse clip against the dense one by PSNR and SSIM. The JSON
also keeps, per caption, each clip's verdicts and what the checker read off it, so a miss can be looked at.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from calibstudio.engine.atomic import atomic_write, writable_destination
from calibstudio.engine.generate import GenerationSettings, compare
from calibstudio.engine.machine import device_name
from calibstudio.engine.models.demo.adherence import (
    ATTRIBUTES,
    Adherence,
    check_clip,
    direction_by_motion,
    summarise,
)
from calibstudio.engine.models.registry import default_device, load_model
from calibstudio.engine.profile import Profile
from calibstudio.engine.progress import tqdm_progress


def evaluate(prompts: list[str], profile_path: str | Path | None = None, threshold: float | None = None,
             model: str = "demo", seed: int = 0, device: str | None = None, backend: str = "auto",
             dense_steps: int | None = None, compile: bool = False,
             guidance_scale: float | None = None) -> dict[str, Any]:
    """Dense and sparse adherence (fractions), mean PSNR/SSIM of sparse vs dense, and the overall speedup.

    ``profile_path`` None: the profile shipped with the model; ``threshold`` None: the model's recommended
    one; ``dense_steps`` and ``guidance_scale`` None: the model's. ``density`` is the mean over the sparse
    clip's steps, its dense first steps counted as 1. ``steps``: the profile's; ``sampler``: the pipeline's
    scheduler class. ``reverse_guidance(_steps)``: the model's sampler setting
    (``DemoAdapter.encode``), recorded since it moves the direction score. ``per_prompt``: each caption's seed,
    PSNR, SSIM and, for both clips, the verdicts and what was read (``ClipReading.describe``).
    """
    if not prompts:
        raise ValueError("no prompts to evaluate (one caption a line)")
    device = device or default_device()
    loaded = load_model(model, device)
    d = loaded.defaults
    threshold = loaded.threshold(threshold)
    guidance_scale = float(d["guidance_scale"]) if guidance_scale is None else guidance_scale
    dense: list[Adherence] = []
    sparse: list[Adherence] = []
    per_prompt, dense_ms, sparse_ms = [], 0.0, 0.0
    with Profile.open(loaded.shipped_profile(profile_path)) as profile:
        steps = profile.meta.num_steps
        dense_steps = loaded.dense_steps(dense_steps, steps)
        density = profile.density(threshold, dense_steps)
        progress = tqdm_progress()
        for i, prompt in enumerate(prompts):
            settings = GenerationSettings(prompt=prompt, height=int(d["height"]), width=int(d["width"]),
                                          frames=int(d["frames"]), steps=steps, seed=seed + i,
                                          guidance_scale=guidance_scale, threshold=threshold,
                                          dense_steps=dense_steps, compile=compile)
            result = compare(loaded.pipe, loaded.adapter, settings, profile, progress, backend)
            report = result.report()
            dense.append(check_clip(result.dense.frames, prompt, (0, 255)))
            sparse.append(check_clip(result.sparse.frames, prompt, (0, 255)))
            per_prompt.append({"prompt": prompt, "seed": settings.seed, "psnr": min(float(report["psnr"]), 100.0),
                               "ssim": float(report["ssim"]), "dense": clip_verdicts(dense[-1]),
                               "sparse": clip_verdicts(sparse[-1])})
            dense_ms += sum(result.dense.step_ms)
            sparse_ms += sum(result.sparse.step_ms)
    psnrs, ssims = ([row[key] for row in per_prompt] for key in ("psnr", "ssim"))
    return {"dense": summarise(dense), "sparse": summarise(sparse),
            "direction_by_motion": {"dense": direction_by_motion(dense), "sparse": direction_by_motion(sparse)},
            "psnr": float(np.mean(psnrs)), "ssim": float(np.mean(ssims)),
            "speedup": dense_ms / max(sparse_ms, 1e-9), "threshold": threshold, "density": density,
            "steps": steps, "sampler": type(loaded.pipe.scheduler).__name__,
            "dense_steps": dense_steps, "guidance_scale": guidance_scale, "compile": compile,
            "reverse_guidance": float(d["reverse_guidance"]),
            "reverse_guidance_steps": int(d["reverse_guidance_steps"]),
            "prompts": len(prompts), "dense_s": dense_ms / 1e3, "sparse_s": sparse_ms / 1e3,
            "device": device_name(device), "torch": torch.__version__, "per_prompt": per_prompt}


def clip_verdicts(adherence: Adherence) -> dict[str, Any]:
    """A clip's entry in ``per_prompt``: True/False per attribute and what the checker read."""
    return {**{k: getattr(adherence, f"{k}_ok") for k in ATTRIBUTES}, "read": adherence.reading.describe()}


def misses(results: dict[str, Any]) -> list[str]:
    """One line per clip that missed an attribute: which clip, what it missed, the caption, what it shows."""
    lines = []
    for row in results["per_prompt"]:
        for name in ("dense", "sparse"):
            missed = [k for k in ATTRIBUTES if not row[name][k]]
            if missed:
                lines.append(f"{name:>6} missed {'+'.join(missed)}: {row['prompt']!r} shows {row[name]['read']}")
    return lines


def run(args: argparse.Namespace) -> int:
    """``calibstudio eval`` (options in ``calibstudio.cli``): print the results, optionally write them as JSON."""
    from calibstudio.engine.jobs_cli import read_prompts

    if args.json:
        writable_destination(args.json)
    results = evaluate(read_prompts(args.prompts), args.profile, args.threshold, args.model, args.seed, args.device,
                       args.backend, args.dense_steps, args.compile, args.guidance_scale)
    for name in ("dense", "sparse"):
        print(f"{name:>6}: " + "  ".join(f"{k} {v:.0%}" for k, v in results[name].items()))
    print(f"sparse vs dense: PSNR {results['psnr']:.1f} dB, SSIM {results['ssim']:.3f}, "
          f"{results['speedup']:.2f}x faster at density {results['density']:.1%} (threshold {results['threshold']})")
    lines = misses(results)
    if lines:
        print(f"{len(lines)} clips missed an attribute (the checker's reading):", *lines, sep="\n  ")
    if args.json:
        atomic_write(args.json, lambda tmp: tmp.write_text(json.dumps(results, indent=1) + "\n"))
    return 0
