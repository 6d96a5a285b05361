"""``calibstudio bench profile``: size and speed of the profile format at Wan-2.1-14B 720p/81f scale.

Builds a synthetic profile with the structure of video attention (40 layers x 40 heads, 591 x 591
blocks of 128 tokens, 4 step bins), then times what the studio does with it: open, read one head's
heatmap, recompute whole-model densities for a new threshold. Layers compile in worker processes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import safetensors
from tqdm import tqdm

from calibstudio.engine.machine import device_name
from calibstudio.engine.profile import CompiledLayer, Profile, ProfileWriter, compile_layer
from calibstudio.engine.synthetic import synthetic_meta, video_block_mass

WAN14B_720P = {"grid": (21, 45, 80), "layers": 40, "heads": 40, "bins": 4, "steps": 50}
TARGETS = {"file_mb": 512.0, "open_s": 1.0, "heatmap_ms": 50.0, "densities_ms": 50.0}


def _synthetic_layer(args: tuple[tuple[int, int, int], int, int, int, float]) -> CompiledLayer:
    grid, heads, seed, prompts, noise = args
    mean, per_prompt = video_block_mass(grid, 128, heads, np.random.default_rng(seed), prompts=prompts, noise=noise)
    return compile_layer(mean, per_prompt)


def run(out_json: Path, profile_path: Path, shape: dict, prompts: int, noise: float, workers: int) -> dict:
    """Build, save, reopen and time a synthetic profile; returns the JSON report (also written)."""
    calibration = {"prompts": [f"synthetic prompt {i}" for i in range(prompts)], "noise": noise}
    meta = synthetic_meta(shape["grid"], shape["layers"], shape["heads"], shape["bins"], shape["steps"],
                          name="synthetic Wan-2.1-T2V-14B", calibration=calibration)
    writer = ProfileWriter(meta)
    jobs = [(b, layer) for b in range(meta.bins) for layer in range(meta.layers)]
    started = time.perf_counter()
    with ProcessPoolExecutor(max_workers=workers) as pool:
        tasks = ((meta.grid, meta.heads, 1000 * b + layer, prompts, noise) for b, layer in jobs)
        for (b, layer), compiled in tqdm(zip(jobs, pool.map(_synthetic_layer, tasks), strict=True),
                                         total=len(jobs), desc="compiling layers", unit="layer"):
            writer.put(b, layer, compiled)
    compile_s = time.perf_counter() - started
    writer.save(profile_path)
    write_s = time.perf_counter() - started

    started = time.perf_counter()
    profile = Profile.open(profile_path)
    open_s = time.perf_counter() - started

    rng = np.random.default_rng(0)
    heatmap_ms = []
    for _ in range(20):
        b, layer, head = (int(rng.integers(n)) for n in (meta.bins, meta.layers, meta.heads))
        started = time.perf_counter()
        profile.heatmap(b, layer, head)
        heatmap_ms.append(1e3 * (time.perf_counter() - started))
    densities_ms = []
    for threshold in np.linspace(0.9, 0.9999, 20):
        started = time.perf_counter()
        profile.densities(float(threshold))
        profile.retained(float(threshold))
        profile.density(float(threshold))
        densities_ms.append(1e3 * (time.perf_counter() - started))
    started = time.perf_counter()
    profile.mask(0, 0, 0.999)
    mask_ms = 1e3 * (time.perf_counter() - started)

    size = profile_path.stat().st_size
    report = {
        "device": device_name("cpu"),
        "versions": {"python": platform.python_version(), "numpy": np.__version__,
                     "safetensors": safetensors.__version__},
        "shape": {"model": "Wan-2.1-T2V-14B 720p/81f (synthetic)", "grid": list(meta.grid), "tokens": meta.tokens,
                  "layers": meta.layers, "heads": meta.heads, "blocks": [meta.nq, meta.nk], "block_size": 128,
                  "bins": meta.bins, "prompts": prompts, "noise": noise},
        "file_bytes": size,
        "file_mb": round(size / 2**20, 1),
        "compile_s": round(compile_s, 1),
        "write_s": round(write_s, 1),
        "open_s": round(open_s, 4),
        "heatmap_ms": round(float(np.median(heatmap_ms)), 2),
        "heatmap_ms_max": round(float(np.max(heatmap_ms)), 2),
        "densities_ms": round(float(np.median(densities_ms)), 3),
        "mask_ms": round(mask_ms, 1),
        "density_at": {str(t): round(profile.density(t), 4) for t in (0.95, 0.99, 0.999, 0.9999)},
        "targets": TARGETS,
    }
    report["pass"] = {key: report[key] <= limit for key, limit in TARGETS.items()}
    profile.close()
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(report, indent=2) + "\n")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="calibstudio bench profile",
        description="Write a synthetic Wan-2.1-14B 720p/81f profile (40x40 heads, 591x591 blocks, 4 bins) and "
                    "report file size, write, open, heatmap and threshold-change times as JSON.")
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks/profile.json"), help="JSON report path")
    parser.add_argument("--keep", type=Path, help="keep the profile at this path (default: a temporary file)")
    parser.add_argument("--prompts", type=int, default=4, help="synthetic calibration prompts (default 4)")
    parser.add_argument("--noise", type=float, default=0.1, help="per-prompt log-normal noise (default 0.1)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="compile processes")
    parser.add_argument("--quick", action="store_true", help="4 layers x 8 heads instead of 40 x 40 (for tests)")
    args = parser.parse_args(argv)
    shape = dict(WAN14B_720P, layers=4, heads=8) if args.quick else WAN14B_720P
    with tempfile.TemporaryDirectory() as tmp:
        path = args.keep or Path(tmp) / "wan14b-720p-synthetic.safetensors"
        report = run(args.out, path, shape, args.prompts, args.noise, args.workers)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
