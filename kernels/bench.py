"""``calibstudio bench kernels``: block-sparse attention backends side by side, written to JSON.

On a GPU: S in {32760, 75600}, H=40, D=128, bf16, B=1, densities {1, .5, .25, .125, .0625}, random and
video masks; SDPA cuDNN dense, flash-attn-4 dense, ours (``sparse_attention`` auto), our Triton kernel,
flash-attn-4 sparse and FlexAttention sparse, each row's backends and dense baselines timed in turns
(``take_turns``: rounds in a balanced order, medians), so that clock drift cannot favour either side of a
ratio. Also the layout build time and the block-mass kernel against one dense cuDNN call, timed in turns.
On a CPU: the CPU path against dense SDPA at the demo model's shape. ``python -m calibstudio.kernels.bench --help``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F

from .attention import choose_backend, fa4_importable, flex_sparse_attention, sparse_attention
from .cpu import cpu_sparse_attention
from .layout import BlockLayout
from .masks import random_block_mask, video_block_mask
from .mass import triton_block_mass
from .triton_fwd import FwdConfig, triton_sparse_attention

GRIDS = {32760: (21, 30, 52), 75600: (21, 45, 80)}
DENSITIES = (1.0, 0.5, 0.25, 0.125, 0.0625)
MASS_VARIANTS = [  # the first is the default; the rest were the H100 sweep's runners-up
    dict(block_m=bm, num_warps=w, num_stages=st, fast_exp=fe, chunk=c)
    for bm, w, st, fe, c in ((128, 8, 2, 0, 16), (128, 8, 2, 2, 16), (128, 8, 2, 0, 8), (128, 8, 2, 2, 8),
                             (128, 8, 2, 1, 16))
]


def _log(*a: Any) -> None:
    print(*a, flush=True)


def _gpu_name() -> str:
    name = torch.cuda.get_device_name().lower()
    for tag in ("h200", "h100", "a100", "l40s", "l4", "a10", "4090", "3090", "b200"):
        if tag in name:
            return tag
    return "".join(c if c.isalnum() else "-" for c in name).strip("-") or "gpu"


def _call_ms(fn: Callable[[], Any], cuda: bool) -> float:
    """One call's ms: CUDA events on the GPU, the wall clock on the CPU."""
    if cuda:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end)
    began = time.perf_counter()
    fn()
    return (time.perf_counter() - began) * 1e3


def _describe(e: Exception) -> str:
    """An exception in one line, for a table row that failed."""
    return f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"


def median_ms(fn: Callable[[], Any], rep: int = 200, samples: int = 10) -> float:
    """Median ms of ``fn`` on the GPU over at least ``samples`` timed calls.

    ``do_bench``'s ``rep`` is a time budget in ms: alone, it times a 200 ms call (720p attention, a
    transformer step) once. One timed call first sizes the budget.
    """
    from triton.testing import do_bench

    fn()
    rep = max(rep, int(samples * _call_ms(fn, cuda=True)) + 1)
    return float(do_bench(fn, warmup=50, rep=rep, return_mode="median"))


class Turn(NamedTuple):
    """One variant of a side-by-side timing: the call, and what to do before and after its turn."""

    call: Callable[[], Any]
    enter: Callable[[], Any] = lambda: None
    leave: Callable[[], Any] = lambda: None


def gpu_telemetry() -> dict[str, float] | None:
    """SM clock, temperature and power of the GPU now (pynvml through torch), or None where unreadable.

    Recorded per variant so that a ratio can be read against the clocks each side ran at.
    """
    try:
        return {"sm_mhz": float(torch.cuda.clock_rate()), "temp_c": float(torch.cuda.temperature()),
                "power_w": torch.cuda.power_draw() / 1e3}
    except Exception:  # no pynvml, or a driver that does not report
        return None


def energy_mj() -> float | None:
    """The GPU's energy counter once its queued work has run (mJ since the driver loaded, pynvml through
    torch), or None where unreadable.

    At the power cap a step's time follows its energy, so a turn records the joules per call beside the
    milliseconds: where a change saves energy (fewer DRAM bytes, less work) is read off directly.
    """
    try:
        import pynvml

        torch.cuda.synchronize()  # else a call still running would count toward the next reading's window
        return float(pynvml.nvmlDeviceGetTotalEnergyConsumption(torch.cuda._get_pynvml_handler()))
    except Exception:  # no pynvml, a driver or GPU without the counter, or torch without the helper
        return None


ENERGY_WINDOW_MS = 1000.0  # timed calls a variant needs for its joules per call to mean something


def balanced_order(n: int, r: int) -> list[int]:
    """Round ``r`` of a Williams design for ``n`` variants: every variant follows every other equally
    often (once in ``n`` rounds for even ``n``, twice in ``2n`` for odd), so carry-over from a
    predecessor cannot favour one of them."""
    if n < 2:
        return list(range(n))
    first = [0]
    for i in range(1, n):
        first.append((i + 1) // 2 if i % 2 else n - i // 2)
    row = [(x + r) % n for x in first]
    return row[::-1] if n % 2 and (r // n) % 2 else row


def take_turns(variants: dict[str, Turn], rounds: int, calls: int, cuda: bool) -> dict[str, dict[str, Any]]:
    """Time every variant in turn, ``rounds`` times, ``calls`` timed calls each after one untimed call.

    Timing one variant to the end before the next would let the machine's clocks and temperature drift
    between the two sides of a ratio; taking turns puts every variant under the same conditions. A
    variant's first calls also run at the clocks its predecessor left (lent H100s sit at the 700 W power
    cap, which the recorded telemetry shows): a merely rotated order gives every variant the same
    predecessor in every round, so the rounds follow a Williams design (:func:`balanced_order`), in which
    every variant follows every other equally often. Returns per variant ``{"ms": median, "samples", "gpu"}``
    (``gpu``: mean telemetry of its turns, and ``j_per_call`` from :func:`energy_mj` over all its timed
    calls where the counter reads and they last at least :data:`ENERGY_WINDOW_MS` — the counter moves in
    steps of ~20-100 ms, so shorter totals would read 0 or a whole step; None off the GPU). A variant that
    raises is dropped from later rounds.
    """
    names = list(variants)
    samples: dict[str, list[float]] = {n: [] for n in names}
    gpu: dict[str, list[dict[str, float]]] = {n: [] for n in names}
    energy: dict[str, list[float]] = {n: [] for n in names}  # mJ of each turn's timed calls
    failed: set[str] = set()
    for r in range(rounds):
        for name in (names[i] for i in balanced_order(len(names), r)):
            if name in failed:
                continue
            turn = variants[name]
            turn.enter()
            try:
                turn.call()
                before = energy_mj() if cuda else None
                samples[name] += [_call_ms(turn.call, cuda) for _ in range(calls)]
                after = energy_mj() if cuda else None
                if before is not None and after is not None:
                    energy[name].append(after - before)
                if cuda and (reading := gpu_telemetry()) is not None:
                    gpu[name].append(reading)
            except Exception as e:  # a backend failing must not lose the rest of the table
                _log(f"    ! {name}: {_describe(e)}")
                failed.add(name)
            finally:
                turn.leave()
    out = {}
    for name in names:
        if not samples[name] or name in failed:
            continue
        readings = gpu[name]
        keys = [k for k in readings[0] if all(k in x for x in readings)] if readings else []
        mean = {k: round(statistics.fmean(x[k] for x in readings), 2) for k in keys} if readings else None
        if mean is not None and energy[name] and sum(samples[name]) >= ENERGY_WINDOW_MS:
            mean["j_per_call"] = round(sum(energy[name]) / (len(energy[name]) * calls) / 1e3, 2)
        out[name] = {"ms": statistics.median(samples[name]), "samples": len(samples[name]), "gpu": mean}
    return out


def _bench_gpu(fn: Callable[[], Any], rep: int = 200) -> float | None:
    try:
        return median_ms(fn, rep)
    except Exception as e:  # a backend failing must not lose the rest of the table
        _log(f"    ! {_describe(e)}")
        return None


def _try(fn: Callable[[], Any]) -> tuple[Any, str | None]:
    try:
        return fn(), None
    except Exception as e:
        return None, _describe(e)


def _err(a: torch.Tensor | None, b: torch.Tensor | None) -> float | None:
    if a is None or b is None:
        return None
    return float((a.float() - b.float()).abs().max())


def _mask(family: str, H: int, S: int, density: float, device: Any, seed: int = 0) -> torch.Tensor:
    nb = -(-S // 128)
    if density >= 1.0:
        return torch.ones(H, nb, nb, dtype=torch.bool, device=device)
    if family == "random":
        return random_block_mask(H, nb, nb, density, seed=seed, device=device)
    grid = GRIDS.get(S) or (1, 1, S)
    return video_block_mask(H, grid, density, 128, seed=seed, device=device)


def _layout_build_ms(H: int, S: int, device: Any) -> float:
    """Median wall time (host, including the one sync) of building a layer's layout on the device."""
    m = _mask("video", H, S, 0.125, device)
    ts = []
    for _ in range(12):
        torch.cuda.synchronize()
        t = time.perf_counter()
        BlockLayout.from_mask(m, 128, 128, S, S)
        torch.cuda.synchronize()
        ts.append((time.perf_counter() - t) * 1e3)
    return statistics.median(ts[2:])


def _sweep_triton(q, k, v, layouts: dict[str, BlockLayout], configs: list[FwdConfig]) -> dict[str, Any]:
    res: dict[str, Any] = {}
    for cfg in configs:
        row = {}
        for name, lay in layouts.items():
            row[name] = _bench_gpu(lambda cfg=cfg, lay=lay: triton_sparse_attention(q, k, v, lay, config=cfg), rep=100)
        res[str(cfg)] = row
        _log(f"  triton {cfg}: " + ", ".join(f"{n}={t:.2f}" if t else f"{n}=fail" for n, t in row.items()))
    return res


def _bench_seq(S: int, args: argparse.Namespace, result: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    dev = torch.device("cuda")
    H, D, B = args.heads, args.head_dim, 1
    dt = torch.bfloat16
    seqs = [int(s) for s in args.seqs.split(",")]
    dens = [float(d) for d in args.densities.split(",")]
    fams = args.masks.split(",")
    have_fa4 = fa4_importable()
    g = torch.Generator(device=dev).manual_seed(S)
    q, k, v = (torch.randn(B, S, H, D, device=dev, dtype=dt, generator=g) for _ in range(3))
    qt, kt, vt = (x.transpose(1, 2) for x in (q, k, v))
    result["layout_build_ms"][str(S)] = _layout_build_ms(H, S, dev)
    _log(f"S={S}: layout build {result['layout_build_ms'][str(S)]:.2f} ms")
    from torch.nn.attention import SDPBackend, sdpa_kernel

    def cudnn(qt=qt, kt=kt, vt=vt):
        with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
            return F.scaled_dot_product_attention(qt, kt, vt)

    # The dense baselines are timed again beside every row (and beside the mass kernel), in turns with it.
    dense = {"cudnn_dense": Turn(cudnn)}
    if have_fa4:
        from flash_attn.cute.interface import flash_attn_func

        dense["fa4_dense"] = Turn(lambda: flash_attn_func(q, k, v))

    def turns(**fns: Callable[[], Any]) -> dict[str, float | None]:
        timed = take_turns({**dense, **{n: Turn(f) for n, f in fns.items()}}, args.rounds, args.calls, cuda=True)
        return {n: timed[n]["ms"] if n in timed else None for n in [*dense, *fns]}

    if args.sweep and S == seqs[0]:
        lays = {
            "d1": BlockLayout.from_mask(_mask("random", H, S, 1.0, dev), 128, 128, S, S),
            "d.25": BlockLayout.from_mask(_mask("random", H, S, 0.25, dev), 128, 128, S, S),
        }
        cfgs = [FwdConfig(*c) for c in ((128, 128, 8, 3, True), (128, 128, 8, 3, True, False, True),
                                        (128, 128, 8, 3, True, True, True), (128, 128, 8, 3))]
        sweep = _sweep_triton(q, k, v, lays, cfgs)
        result["triton_sweep"][str(S)] = sweep
        ok = {c: r["d1"] + r["d.25"] for c, r in sweep.items() if r["d1"] and r["d.25"]}
        if ok:
            best = min(ok, key=ok.get)
            os.environ["CALIBSTUDIO_TRITON_FWD"] = best
            _log(f"  triton config chosen: {best}")
    if args.mass:
        _, lse = triton_sparse_attention(q, k, v, BlockLayout.dense(H, S, device=dev), return_lse=True)
        variants = MASS_VARIANTS if (args.sweep and S == seqs[0]) else [result.get("mass_best", MASS_VARIANTS[0])]
        for var in variants:
            t = turns(mass=lambda var=var: triton_block_mass(q, k, lse, **var))
            ms, ms_cudnn = t["mass"], t["cudnn_dense"]
            result["mass"].append({"S": S, **var, "ms": ms, "ms_cudnn_dense": ms_cudnn,
                                   "ratio_to_cudnn": (ms / ms_cudnn) if ms and ms_cudnn else None})
            _log(f"  mass {var}: {ms} ms  ({(ms or 0) / (ms_cudnn or 1):.3f} x cudnn dense)")
        done = [m for m in result["mass"] if m["S"] == S and m["ms"]]
        if done and "mass_best" not in result:
            best_m = min(done, key=lambda m: m["ms"])
            result["mass_best"] = {k_: best_m[k_] for k_ in MASS_VARIANTS[0]}
        del lse
    for fam in fams if not args.sweep_only else []:
        for d in dens:
            if d >= 1.0 and fam != fams[0]:
                continue  # density 1 is the same mask for every family
            lay = BlockLayout.from_mask(_mask(fam, H, S, d, dev, seed=int(d * 1000)), 128, 128, S, S)
            ref, _ = _try(lambda lay=lay: triton_sparse_attention(q, k, v, lay))
            row: dict[str, Any] = {"S": S, "H": H, "D": D, "B": B, "density": round(lay.density, 5),
                                   "density_target": d, "mask": fam if d < 1 else "dense",
                                   "repeated_rows": round(lay.repeated_rows(), 4), "max_k": lay.max_k}
            fns = {"triton": lambda lay=lay: triton_sparse_attention(q, k, v, lay),
                   "ours": lambda lay=lay: sparse_attention(q, k, v, lay),
                   "flex": lambda lay=lay: flex_sparse_attention(q, k, v, lay)}
            if have_fa4:
                fns["fa4"] = lambda lay=lay: sparse_attention(q, k, v, lay, backend="fa4")
            t = turns(**fns)
            row.update({f"ms_{n}": t.get(n) for n in ("ours", "triton", "fa4", "flex", "cudnn_dense", "fa4_dense")})
            o, e = _try(lambda lay=lay: sparse_attention(q, k, v, lay))
            row["err_ours_vs_triton"] = _err(o, ref)
            o, e = _try(lambda lay=lay: flex_sparse_attention(q, k, v, lay))
            row["err_flex_vs_triton"] = _err(o, ref)
            best_dense = min((x for x in (row["ms_cudnn_dense"], row["ms_fa4_dense"]) if x), default=None)
            if best_dense and row["ms_ours"]:
                row["ours_over_ideal"] = row["ms_ours"] / (lay.density * best_dense)
            if row["ms_triton"] and row["ms_flex"]:
                row["flex_over_triton"] = row["ms_flex"] / row["ms_triton"]
            if best_dense and row["ms_triton"]:
                row["triton_over_ideal"] = row["ms_triton"] / (lay.density * best_dense)
            if result["ours_backend"] == "fa4" and row["ms_ours"] and row["ms_fa4"]:
                # "ours" is then the fa4 call under a second name: how far one kernel reads from itself in
                # turns, the resolution of every ratio in the row (up to ~5% on lent H100s at the power cap)
                row["same_kernel_spread"] = abs(row["ms_ours"] - row["ms_fa4"]) / min(row["ms_ours"], row["ms_fa4"])
            rows.append(row)
            _log("  " + _fmt_row(row))
            del ref, o


def run_gpu(args: argparse.Namespace) -> dict[str, Any]:
    dev = torch.device("cuda")
    seqs = [int(s) for s in args.seqs.split(",")]
    have_fa4 = fa4_importable()
    ours = choose_backend(dev, "auto")
    _log(f"device {torch.cuda.get_device_name()}  fa4={'yes' if have_fa4 else 'no'}  ours={ours}")
    result: dict[str, Any] = {"layout_build_ms": {}, "mass": [], "triton_sweep": {}, "ours_backend": ours}
    rows: list[dict[str, Any]] = []
    for S in seqs:
        _bench_seq(S, args, result, rows)
        torch.cuda.empty_cache()
    result["rows"] = rows
    return result


def _f(x: Any, nd: int = 2) -> str:
    return "-" if x is None else f"{x:.{nd}f}"


def _fmt_row(r: dict[str, Any]) -> str:
    return (f"S={r['S']} {r['mask']:6s} d={r['density']:.3f} ours={_f(r.get('ms_ours'))} "
            f"triton={_f(r.get('ms_triton'))} fa4={_f(r.get('ms_fa4'))} flex={_f(r.get('ms_flex'))} "
            f"| ours/(d*best)={_f(r.get('ours_over_ideal'))} flex/triton={_f(r.get('flex_over_triton'))}")


def run_cpu(args: argparse.Namespace) -> dict[str, Any]:
    from calibstudio.engine.cpu_allocator import keep_freed_memory

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    # Under the allocator setting every CPU job runs with (models.registry.load_model): without it, each
    # fresh multi-MB buffer page-faults, which is not what the engine pays.
    allocator = "freed memory kept (engine setting)" if keep_freed_memory() else "default"
    # The demo model's own shape first (v4: 4096 tokens, 4 heads), then demo-like ones: (S, H, token grid
    # f x h x w); S=2048 is v1's and S=3120 has a partial last block.
    shapes = [(512, 4, (2, 16, 16))] if args.quick else [(4096, 4, (16, 16, 16)), (2048, 4, (8, 16, 16)),
                                                          (2048, 12, (8, 16, 16)), (3120, 8, (13, 15, 16)),
                                                          (4096, 8, (16, 16, 16))]
    dens = [0.25] if args.quick else [0.5, 0.25, 0.125]
    rounds, calls = (2, 1) if args.quick else (args.rounds, args.calls)
    rows = []
    for S, H, grid in shapes:
        q, k, v = (torch.randn(1, S, H, 64) for _ in range(3))
        qt, kt, vt = (x.transpose(1, 2) for x in (q, k, v))
        nb = -(-S // 128)
        for fam in ("random", "video"):
            for d in dens:
                m = random_block_mask(H, nb, nb, d) if fam == "random" else video_block_mask(H, grid, d)
                lay = BlockLayout.from_mask(m, 128, 128, S, S)

                def dense(qt=qt, kt=kt, vt=vt):
                    return F.scaled_dot_product_attention(qt, kt, vt)

                def sparse(q=q, k=k, v=v, lay=lay):
                    return cpu_sparse_attention(q, k, v, lay)

                t = take_turns({"dense": Turn(dense), "sparse": Turn(sparse)}, rounds, calls, cuda=False)
                row = {"S": S, "H": H, "D": 64, "B": 1, "density": round(lay.density, 5), "mask": fam,
                       "ms_ours": t["sparse"]["ms"], "ms_cpu": t["sparse"]["ms"], "ms_sdpa_dense": t["dense"]["ms"],
                       "speedup": t["dense"]["ms"] / t["sparse"]["ms"],
                       "ms_triton": None, "ms_fa4": None, "ms_flex": None, "ms_cudnn_dense": None,
                       "ms_fa4_dense": None, "threads": threads}
                rows.append(row)
                _log(f"S={S} H={H} {fam:6s} d={row['density']:.3f}: cpu {row['ms_ours']:.1f} ms, "
                     f"dense sdpa {row['ms_sdpa_dense']:.1f} ms, speedup {row['speedup']:.2f}x")
    return {"allocator": allocator, "rows": rows}


def main(argv: list[str] | None = None) -> int:
    """CLI entry: ``calibstudio bench kernels [--out PATH] [--quick]``; returns the exit code."""
    p = argparse.ArgumentParser(prog="calibstudio bench kernels", description=__doc__.splitlines()[0])
    p.add_argument("--out", default=None, help="JSON path (default docs/benchmarks/kernels-<gpu|cpu>.json)")
    p.add_argument("--quick", action="store_true", help="tiny run (smoke test)")
    p.add_argument("--cpu", action="store_true", help="run the CPU benchmark even when a GPU is present")
    p.add_argument("--seqs", default="32760,75600")
    p.add_argument("--densities", default=",".join(str(d) for d in DENSITIES))
    p.add_argument("--masks", default="random,video")
    p.add_argument("--heads", type=int, default=40)
    p.add_argument("--head-dim", type=int, default=128)
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads (the CPU benchmark; default: torch's own count, as jobs run. Setting it, "
                        "even to that count, slowed both sides here: dense 8%%, sparse 19%%, 2-core CPU)")
    p.add_argument("--rounds", type=int, default=6,
                   help="rounds of the side-by-side timing: every backend of a row, dense baselines included, is "
                        "timed once per round, rounds in a balanced order (default 6: a full Williams square for "
                        "the six GPU timings of a row)")
    p.add_argument("--calls", type=int, default=3, help="timed calls per backend per round (default 3)")
    p.add_argument("--no-sweep", dest="sweep", action="store_false", help="skip the Triton config sweep")
    p.add_argument("--no-mass", dest="mass", action="store_false", help="skip the block-mass kernel")
    p.add_argument("--sweep-only", action="store_true", help="only the config sweeps (tuning run)")
    p.add_argument("--partial", default=None, help="also rewrite this JSON after every row")
    args = p.parse_args(argv)
    gpu = torch.cuda.is_available() and not args.cpu
    if gpu and args.quick:
        args.seqs, args.densities, args.heads = "4096", "1,0.25", 8
        args.sweep = False
    res = run_gpu(args) if gpu else run_cpu(args)
    import triton

    from calibstudio.engine.atomic import atomic_write
    from calibstudio.engine.machine import device_name  # the one wording of a device in our JSON

    doc = {
        "device": device_name("cuda" if gpu else "cpu"),
        "torch": torch.__version__,
        "triton": triton.__version__,
        "python": sys.version.split()[0],
        "quick": bool(args.quick),
        "date": time.strftime("%Y-%m-%d"),
    }
    if gpu:
        try:
            import importlib.metadata as md

            doc["flash_attn_4"] = md.version("flash-attn-4")
        except Exception:
            doc["flash_attn_4"] = None
    doc.update(res)
    out = Path(args.out or f"docs/benchmarks/kernels-{_gpu_name() if gpu else 'cpu'}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(doc, indent=1, default=lambda x: None if isinstance(x, float) and math.isnan(x) else x)
    atomic_write(out, lambda tmp: tmp.write_text(text))  # an interrupted run leaves the last record whole
    _log(f"wrote {out}")
    if gpu:
        _log("\n" + "\n".join(_fmt_row(r) for r in res["rows"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
