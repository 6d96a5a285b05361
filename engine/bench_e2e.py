"""``calibstudio bench e2e``: one transformer step of a Wan-2.1-14B-shaped model, dense vs sparse.

Random weights, the 14B config with 4 of its 40 blocks, bf16, at 480p/81f (32 760 tokens) and
720p/81f (75 600 tokens). Per step (one transformer forward): SDPA dense (diffusers' default),
flash-attn-4 dense (the best dense kernel here, when installed), and our sparse attention through
the engine's own hook at densities 1, 0.25 and 0.125 with structured video masks; each eager and
``torch.compile``d. Ratios are measured side by side in one run: every variant, eager and compiled, is
compiled and warmed first, then all are timed in turns (rounds in a balanced order), so that a GPU warming
up over the run slows every side of a ratio alike; the mean SM clock, temperature, power and joules per call of each
variant's turns are recorded beside its time.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from calibstudio.engine.atomic import atomic_write
from calibstudio.engine.machine import device_name

FUSED = " fused-qkv"  # suffix of a variant run with its self-attention Q, K, V projections fused
RESOLUTIONS = {"480p": (480, 832), "720p": (720, 1280)}
WAN14B = {"num_attention_heads": 40, "attention_head_dim": 128, "in_channels": 16, "out_channels": 16,
          "text_dim": 4096, "freq_dim": 256, "ffn_dim": 13824, "cross_attn_norm": True,
          "qk_norm": "rms_norm_across_heads", "eps": 1e-6, "patch_size": (1, 2, 2)}
TINY = dict(WAN14B, num_attention_heads=4, attention_head_dim=64, text_dim=64, ffn_dim=256)


def _inputs(res: str, frames: int, config: dict, device: str, dtype: torch.dtype, scale: int) -> dict[str, Any]:
    height, width = (x // scale for x in RESOLUTIONS[res])
    latent = (1, config["in_channels"], (frames - 1) // 4 + 1, height // 8, width // 8)
    return {"hidden_states": torch.randn(latent, device=device, dtype=dtype),
            "timestep": torch.tensor([500], device=device),
            "encoder_hidden_states": torch.randn(1, 512, config["text_dim"], device=device, dtype=dtype),
            "return_dict": False}


def _breakdown(fn: Callable[[], Any], device: str, top: int = 12) -> list[list[Any]]:
    """The ``top`` kernels (or CPU ops) of one call by their own time: [[name, ms, calls], ...].

    Where a step's time goes, per variant, so that what is left to optimise is read off the JSON rather
    than guessed from differences of totals (which vary by ~5% between lent GPUs).
    """
    from torch.profiler import ProfilerActivity, profile

    activity = ProfilerActivity.CUDA if device == "cuda" else ProfilerActivity.CPU
    with profile(activities=[activity]) as prof:
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
    own = "self_device_time_total" if device == "cuda" else "self_cpu_time_total"
    events = sorted(prof.key_averages(), key=lambda e: getattr(e, own), reverse=True)[:top]
    return [[e.key[:120], round(getattr(e, own) / 1e3, 3), e.count] for e in events]


def _fa4_dense() -> Callable | None:
    try:
        from flash_attn.cute.interface import flash_attn_func
    except Exception:
        return None

    def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        out = flash_attn_func(q, k, v)
        return out[0] if isinstance(out, tuple) else out

    return attend


def _qkv_fusion(model: torch.nn.Module) -> tuple[Callable[[], None], Callable[[], None]]:
    """Switches the self-attention Q, K, V projections between three GEMMs and one.

    The fused weights are built once (diffusers' own ``WanAttention.fuse_projections``) and the switch
    only flips ``fused_projections``, which the hook's processor reads: a compiled model keeps one graph
    per setting instead of recompiling on every turn for a new ``to_qkv`` module.
    """
    attns = [block.attn1 for block in model.blocks]
    for attn in attns:
        attn.fuse_projections()

    def switch(on: bool) -> None:
        for attn in attns:
            attn.fused_projections = on

    switch(False)
    return (lambda: switch(True)), (lambda: switch(False))


def run(args: argparse.Namespace) -> dict[str, Any]:
    from diffusers import WanTransformer3DModel

    from calibstudio.engine.attention_hook import AttentionHook
    from calibstudio.engine.models.wan import WanAdapter
    from calibstudio.kernels.bench import Turn, take_turns
    from calibstudio.kernels.layout import BlockLayout
    from calibstudio.kernels.masks import video_block_mask

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    config = TINY if args.quick else WAN14B
    with torch.device(device):
        model = WanTransformer3DModel(**config, num_layers=args.layers).to(dtype).eval()
    adapter, fa4 = WanAdapter(), _fa4_dense()
    modes = [(c, m) for c in args.compiled for m in (args.compile_mode if c else [None])]
    rounds, calls = (2, 1) if args.quick else (args.rounds, args.calls)
    rows, breakdown, telemetry = [], {}, {}
    for res in args.res:
        torch._dynamo.reset()  # a new size compiles afresh (no dynamic-shape graph from the previous one)
        inputs = _inputs(res, args.frames, config, device, dtype, 4 if args.quick else 1)
        _, _, f, h, w = inputs["hidden_states"].shape
        grid = (f, h // 2, w // 2)
        tokens = grid[0] * grid[1] * grid[2]
        heads = config["num_attention_heads"]

        def hook(mode: str, **kw: Any) -> AttentionHook:
            return AttentionHook(adapter, model, mode=mode, **kw)

        hooks: dict[str, AttentionHook | None] = {"sdpa": None}
        if fa4 is not None:
            hooks["fa4_dense"] = hook("dense", dense_fn=fa4)
        for density in args.densities:
            layouts = {layer: BlockLayout.from_mask(video_block_mask(heads, grid, density, seed=layer, device=device),
                                                    q_len=tokens, k_len=tokens) for layer in range(args.layers)}
            hooks[f"sparse_{density}"] = hook("sparse", layouts=layouts, backend=args.backend)
        fuse, unfuse = _qkv_fusion(model) if args.fuse_qkv else (None, None)
        fusions = [(name, variant, False) for name, variant in hooks.items()]
        if args.fuse_qkv:  # an extra of the sparse step: the baselines stay diffusers' default
            fusions += [(name, variant, True) for name, variant in hooks.items() if name.startswith("sparse")]
        variants: dict[str, Turn] = {}
        for compiled, mode in modes:
            forward = torch.compile(model, mode=None if mode == "default" else mode) if compiled else model
            for name, variant, fused in fusions:
                key = f"{res} {f'compiled {mode}' if compiled else 'eager'} {name}{FUSED if fused else ''}"

                def step(forward: Callable = forward, inputs: dict = inputs) -> Any:
                    with torch.no_grad():
                        return forward(**inputs)

                enter, leave = (variant.install, variant.remove) if variant else (lambda: None, lambda: None)
                if fused:
                    enter, leave = (lambda e=enter, f=fuse: (f(), e())), (lambda le=leave, u=unfuse: (le(), u()))
                turn = Turn(step, enter, leave)
                try:  # compile and warm up here, so that no timed round pays for it
                    turn.enter()
                    step()
                    step()
                    if args.breakdown:
                        breakdown[key] = _breakdown(step, device)
                    variants[key] = turn
                except Exception as error:  # one failing variant must not lose the others' timings
                    print(f"{key}: FAILED {type(error).__name__}: {error}", flush=True)
                finally:
                    turn.leave()
        timed = take_turns(variants, rounds, calls, cuda=device == "cuda")
        for key, t in timed.items():
            print(f"{key}: {t['ms']:.1f} ms ({t['samples']} calls)" + (f" {t['gpu']}" if t["gpu"] else ""),
                  flush=True)
            if t["gpu"]:
                telemetry[key] = t["gpu"]
        for compiled, mode in modes:
            prefix = f"{res} {f'compiled {mode}' if compiled else 'eager'}"
            times = {k.removeprefix(f"{prefix} "): t["ms"] for k, t in timed.items() if k.startswith(f"{prefix} ")}
            for density in args.densities:
                sparse = times.get(f"sparse_{density}")
                if sparse is None or "sdpa" not in times:
                    continue
                rows.append({"res": res, "frames": args.frames, "tokens": tokens, "density": density,
                             "compiled": compiled, "compile_mode": mode, "ms_dense": times["sdpa"], "ms_sparse": sparse,
                             "speedup": times["sdpa"] / sparse, "ms_fa4_dense": times.get("fa4_dense"),
                             "speedup_vs_best_dense": min(times["sdpa"], times.get("fa4_dense", float("inf")))
                             / sparse})
                if f"sparse_{density}{FUSED}" in times:  # the same step with Q, K, V as one GEMM
                    rows[-1]["ms_sparse_fused_qkv"] = times[f"sparse_{density}{FUSED}"]
    eager_sdpa = {r["res"]: r["ms_dense"] for r in rows if not r["compiled"]}
    for row in rows:
        base = eager_sdpa.get(row["res"], row["ms_dense"])
        row["speedup_vs_eager_sdpa"] = base / row["ms_sparse"]
        if "ms_sparse_fused_qkv" in row:
            row["speedup_vs_eager_sdpa_fused_qkv"] = base / row["ms_sparse_fused_qkv"]
    report = {"device": device_name(device),
              "torch": torch.__version__, "layers": args.layers, "backend": args.backend,
              "config": "tiny" if args.quick else "Wan-2.1-T2V-14B",
              "timer": f"interleaved: {rounds} rounds, every variant (eager and compiled) in turn, rounds in a "
                       f"Williams order (each variant follows every other equally often); per round one untimed "
                       f"call then {calls} timed; ms = median of all timed calls",
              "rows": rows}
    if telemetry:
        report["gpu_telemetry"] = telemetry  # per "res mode variant": mean SM clock, temperature, power, J per call
    if breakdown:
        report["breakdown_ms"] = breakdown  # per "res mode variant": [[kernel, ms, calls], ...] of one step
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="calibstudio bench e2e",
        description="Per-step time of a Wan-2.1-14B-shaped transformer (random weights, a few blocks, bf16): "
                    "SDPA dense, flash-attn-4 dense and our sparse attention, eager and compiled.")
    parser.add_argument("--out", type=Path, help="JSON path (default docs/benchmarks/e2e-<gpu>.json)")
    parser.add_argument("--res", nargs="+", default=["480p", "720p"], choices=sorted(RESOLUTIONS))
    parser.add_argument("--frames", type=int, default=81)
    parser.add_argument("--layers", type=int, default=4, help="transformer blocks (default 4 of 40)")
    parser.add_argument("--densities", type=float, nargs="+", default=[1.0, 0.25, 0.125])
    parser.add_argument("--compiled", type=lambda s: s == "1", nargs="+", default=[False, True],
                        help="1 for torch.compile, 0 for eager (default: 0 1)")
    parser.add_argument("--compile-mode", nargs="+", default=["default"],
                        choices=["default", "max-autotune-no-cudagraphs", "max-autotune", "reduce-overhead"],
                        help="torch.compile mode(s) of the compiled rows, each timed in turn (default: default); "
                             "max-autotune-no-cudagraphs also tunes the GEMMs and fuses their epilogues (minutes "
                             "of compile on Wan-14B shapes)")
    parser.add_argument("--backend", default="auto", help="sparse backend (default auto)")
    parser.add_argument("--fuse-qkv", action="store_true",
                        help="also time every sparse variant with its self-attention Q, K, V projections fused into "
                             "one GEMM (diffusers' fuse_projections), in the same turns")
    parser.add_argument("--quick", action="store_true", help="tiny config at 1/4 size (CPU smoke run)")
    parser.add_argument("--rounds", type=int, default=5,
                        help="rounds of the interleaved timing: every variant is timed once per round (default 5)")
    parser.add_argument("--calls", type=int, default=3, help="timed calls per variant per round (default 3)")
    parser.add_argument("--breakdown", action="store_true",
                        help="also profile one step of each variant and record its top kernels (breakdown_ms)")
    args = parser.parse_args(argv)
    report = run(args)
    name = report["device"].replace("NVIDIA ", "").split()[0].lower() if torch.cuda.is_available() else "cpu"
    out = args.out or Path(f"docs/benchmarks/e2e-{name}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, lambda tmp: tmp.write_text(json.dumps(report, indent=2) + "\n"))
    print(json.dumps(report["rows"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
