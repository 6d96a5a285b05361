"""Train the demo model on procedural clips: ``python -m calibstudio.engine.models.demo.train``.

Flow matching in pixel space (the target is ``noise - clip``, as diffusers' flow-matching
scheduler expects), plain unweighted MSE (weighting the shape's pixels up, tried to make shapes
learn faster, biases the optimum and draws shapes too large), text dropped 10% of the time so
classifier-free guidance works, a few words replaced by ``<unk>`` so unknown words are tolerated,
an EMA of the weights for the shipped model. ``--distill TEACHER`` swaps the flow-matching target for a teacher
model's guided velocity (``distill.py``): how the shipped v5 samples with one transformer pass a step.

Reproducible from ``--seed``: example ``i`` of the run is rendered from ``(seed, i)``, whatever the
number of loader workers. Sized for the lent GPU's budget: ``--max-minutes`` stops cleanly and
``--resume`` continues from the folder's last checkpoint in a later session (weights and EMA are
restored; the optimiser's moments start afresh with a short warm-up, since they are not kept —
the checkpoint stays small enough to carry between machines).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from calibstudio.engine.atomic import atomic_write
from calibstudio.engine.attention_hook import AttentionHook
from calibstudio.engine.machine import device_name
from calibstudio.engine.models.base import Conditioning, ModelLoadError
from calibstudio.engine.models.demo import captions, scenes
from calibstudio.engine.models.demo.adherence import check_clip, direction_by_motion, summarise, teleport_count
from calibstudio.engine.models.demo.distill import (
    GuidanceRule,
    GuidanceTeacher,
    contrast_ids,
    distilled_defaults,
    weights_digest,
)
from calibstudio.engine.models.demo.locality import LocalityPenalty
from calibstudio.engine.models.demo.model import (
    CONFIG,
    SCHEDULER_SHIFT,
    TRANSFORMER_CONFIG,
    DemoAdapter,
    DemoPipeline,
    clip_to_latents,
    load_demo,
    save_demo,
    save_weights,
)
from calibstudio.engine.models.demo.text import UNK, tokenize
from calibstudio.engine.trajectory import Trajectory

TEXT_DROPOUT, WORD_DROPOUT, REWARM_STEPS = 0.1, 0.05, 100


class RunError(Exception):
    """The command line asks for something the run in ``--out`` cannot do (the message says what to do)."""


class ProceduralClips(Dataset):
    """Example ``i`` = the clip and a paraphrased caption rendered from ``(seed, i)``."""

    def __init__(self, seed: int, vocab: list[str], length: int, split: str = "train", texture: float = 0.0,
                 frames: int = scenes.DEFAULT_FRAMES, motion_weights: dict[str, float] | None = None,
                 contrasts: bool = False) -> None:
        self.seed, self.vocab, self.length, self.split, self.texture = seed, vocab, length, split, texture
        self.frames, self.motion_weights, self.contrasts = frames, motion_weights, contrasts

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> tuple[torch.Tensor, ...]:
        """The clip and its caption's word ids (and, with ``contrasts``, its contrast captions' for a teacher)."""
        clip, text, _ = captions.example(np.random.default_rng([self.seed, i]), self.split, self.frames,
                                         texture=self.texture, motion_weights=self.motion_weights)
        example = (torch.from_numpy(clip), tokenize([text], self.vocab)[0])
        return (*example, contrast_ids(text, self.vocab)) if self.contrasts else example


def held_out_prompts(count: int, seed: int = 1234) -> list[str]:
    """Captions of held-out (colour, shape, motion) triples: never seen in training."""
    rng = np.random.default_rng(seed)
    return [captions.example(rng, "test")[1] for _ in range(count)]


@torch.no_grad()
def sample(pipe: DemoPipeline, prompts: list[str], seed: int, steps: int, guidance: float,
           frames: int = scenes.DEFAULT_FRAMES) -> np.ndarray:
    """A batch of clips (uint8 ``[B, F, H, W, 3]``) through the engine's own trajectory code."""
    adapter = DemoAdapter()
    h, w = scenes.DEFAULT_HEIGHT, scenes.DEFAULT_WIDTH
    latents = torch.cat([adapter.initial_latents(pipe, h, w, frames, seed + i) for i in range(len(prompts))])
    conditioning = Conditioning(pipe.encode_text(prompts), pipe.encode_text([""] * len(prompts)), guidance)
    trajectory = Trajectory(pipe, adapter, conditioning, latents, steps)
    while not trajectory.done:
        trajectory.step()
    return np.stack([adapter.decode(pipe, trajectory.latents[i : i + 1]) for i in range(len(prompts))])


def noise_levels(u: torch.Tensor, shift: float) -> torch.Tensor:
    """Training noise levels from uniform ``u``: the sampler's time shift (``--noise-shift``), so a larger shift
    puts more examples at the noisiest levels, as the sampler puts more of its steps there."""
    return shift * u / (1 + (shift - 1) * u)


def lr_at(step: int, args: argparse.Namespace, resumed_at: int) -> float:
    """Linear warm-up (and a short re-warm after a resume), then cosine decay to 10% at ``--steps``."""
    warm = min(1.0, (step + 1) / args.warmup, (step - resumed_at + 1) / REWARM_STEPS if resumed_at else 1.0)
    progress = min(1.0, step / args.steps)
    return args.lr * warm * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def _load_weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return {k: v.float() for k, v in load_file(path).items()}


def _plot_loss(log: Path, png: Path) -> None:
    """Loss curve (mean over each logging interval) as a PNG, drawn with the studio's plotting library."""
    rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    if not rows:
        return
    import os

    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    import pyqtgraph as pg
    import pyqtgraph.exporters
    from PySide6.QtWidgets import QApplication

    _app = QApplication.instance() or QApplication([])
    steps, loss = np.array([r["step"] for r in rows]), np.array([r["loss"] for r in rows])
    plot = pg.PlotWidget(background="w")
    plot.setLogMode(y=True)
    plot.setLabel("bottom", "step")
    plot.setLabel("left", "flow-matching loss (MSE)")
    plot.plot(steps, loss, pen=pg.mkPen((20, 40, 160), width=2))
    exporter = pyqtgraph.exporters.ImageExporter(plot.plotItem)
    atomic_write(png, lambda tmp: exporter.export(str(tmp)))


def weighted_mse(pred: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Mean squared error with one weight per batch row (0 leaves a row out)."""
    per_row = (pred.float() - target.float()).pow(2).flatten(1).mean(1)
    return (per_row * weights).sum() / weights.sum().clamp(min=1)


def consistency_gap(velocity: torch.Tensor, half: int, teacher: bool = False,
                    weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared gap between the dense predictions (first ``half`` rows) and the windowed ones (the rest).

    ``teacher``: the dense side is a fixed target, so minimising the gap moves only the windowed pass;
    symmetric, it also drags the dense pass toward the windows, which cost the dense clips motion.
    ``weights`` (``[half]``): how much each pair counts (default: all alike).
    """
    dense = velocity[:half]
    weights = torch.ones(half, device=velocity.device) if weights is None else weights
    return weighted_mse(dense.detach() if teacher else dense, velocity[half:], weights)


def sparse_noise_levels(sigma: torch.Tensor, below: float) -> torch.Tensor:
    """1.0 where a training example's noise level is one whose sampling steps may run sparse, else 0.0.

    With ``train --local-below S`` the locality prior and the windowed twins apply only below noise
    level S: the first, noisiest steps — where the clip's layout and motion are decided and every
    frame must see the others — keep dense attention, and a sparse clip runs those steps dense
    (``--dense-steps``: the steps whose sigma is >= S).
    """
    return (sigma < below).float()


def dense_steps_above(pipe: DemoPipeline, below: float) -> int:
    """How many of the model's default sampling steps have a noise level >= ``below``: the steps a
    model trained with ``--local-below`` must run dense (exported as its ``dense_steps`` default)."""
    if below >= 1.0:  # the prior covered every level
        return 0
    scheduler = copy.deepcopy(pipe.scheduler)
    scheduler.set_timesteps(int(pipe.defaults["steps"]))
    return int((scheduler.sigmas[:-1] >= below).sum())


def train(args: argparse.Namespace) -> dict:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    state_file, log_file = out / "state.json", out / "train_log.jsonl"
    resumed_at, resuming = 0, args.resume and state_file.is_file()
    init_folder = args.init or args.distill  # a distilled student starts as its teacher unless told otherwise
    initial = load_demo(init_folder) if init_folder and not resuming else None  # one clear error for a wrong folder
    if resuming:
        saved = json.loads(state_file.read_text())
        distilled = saved.get("distill", {})
        if args.distill and distilled.get("teacher") != args.distill:
            raise RunError(f"{out} does not distill {args.distill}; resume it without --distill, or start a new run "
                           f"(--init {out / 'demo_model'} --distill {args.distill})")
        if distilled and weights_digest(distilled["teacher"]) != distilled["weights"]:
            raise RunError(f"the teacher in {distilled['teacher']} is not the model {out} began distilling (its "
                           f"weights differ or are gone): put that model back there, or start a new run")
        layers, clock = saved.get("layers", TRANSFORMER_CONFIG["num_layers"]), saved.get("clock", False)
        if args.layers is not None and args.layers != layers:
            raise RunError(f"{out} trains a model of {layers} blocks; resume it without --layers, or start a new run "
                           f"(--init {out / 'demo_model'} --layers {args.layers})")
        if args.clock and not clock:
            raise RunError(f"{out} trains a model without the clock channels; resume it without --clock, or start "
                           f"a new run (--init {out / 'demo_model'} --clock)")
    elif initial is not None:
        layers, clock = initial.transformer.config.num_layers, initial.has_clock
    else:
        layers, clock = args.layers or TRANSFORMER_CONFIG["num_layers"], args.clock
    pipe = DemoPipeline.fresh(args.seed, layers, clock)
    state = {"step": 0, "elapsed_s": 0.0, "seed": args.seed, "batch": args.batch, "steps": args.steps,
             "texture": args.texture, "locality": args.locality or 0.0, "consistency": args.consistency or 0.0,
             "locality_anchor": args.locality_anchor, "locality_far": args.locality_far or [],
             "consistency_teacher": args.consistency_teacher,
             "local_below": args.local_below if args.local_below is not None else 1.0,
             "motion_weights": args.motion_weights or {}, "noise_shift": args.noise_shift, "layers": layers,
             "clock": clock}
    teacher = None
    if args.distill and not resuming:
        teacher = GuidanceTeacher(load_demo(args.distill))
        state["distill"] = {"teacher": args.distill, "weights": weights_digest(args.distill), **teacher.rule.as_dict()}
    if initial is not None:
        init = Path(init_folder)
        pipe.load_state_dict(initial.state_dict())
        if args.layers is not None and args.layers != layers:
            try:
                pipe.deepen(args.layers, seed=args.seed)
            except ValueError as error:
                raise RunError(f"--layers {args.layers}: {error}") from None
            state["layers"] = args.layers
            print(f"grown from {layers} to {args.layers} blocks", flush=True)
        if args.clock and not clock:
            pipe.add_clock(seed=args.seed)
            state["clock"] = True
            print("the model now reads the clock channels", flush=True)
        state["frames"] = int(initial.defaults["frames"])
        state["defaults"] = dict(initial.defaults)  # its guidance, threshold, calibration recipe: a resume keeps them
        state["init"] = {"folder": str(init), **json.loads((init / CONFIG).read_text()).get("training", {})}
        print(f"fine-tuning the model in {init}", flush=True)
    if resuming:
        state = {"layers": layers, "clock": clock, **saved}  # runs from before either option resume as they were
        pipe.load_state_dict(_load_weights(out / "raw.safetensors"))
        resumed_at = state["step"]
        if args.frames is not None and args.frames != state.get("frames", scenes.DEFAULT_FRAMES):
            raise RunError(f"{out} trains {state.get('frames', scenes.DEFAULT_FRAMES)}-frame clips; resume it "
                             f"without --frames, or start a new run (--init) at {args.frames} frames")
        # a resume may change its priors
        for knob in ("locality", "consistency", "local_below", "motion_weights", "locality_far", "noise_shift"):
            if getattr(args, knob) is not None:
                state[knob] = getattr(args, knob)
        for flag in ("locality_anchor", "consistency_teacher"):  # switched on for good once given
            state[flag] = state.get(flag, False) or getattr(args, flag)
        print(f"resuming at step {resumed_at} ({state['elapsed_s'] / 60:.1f} min trained so far)", flush=True)
    if args.frames is not None:
        state["frames"] = args.frames
    frames = state.setdefault("frames", scenes.DEFAULT_FRAMES)
    grid = DemoAdapter().token_grid(pipe, scenes.DEFAULT_HEIGHT, scenes.DEFAULT_WIDTH, frames)  # checks the length
    pipe.defaults.update(state.get("defaults", {}))  # a fine-tune keeps the inference defaults of its --init
    pipe.defaults["frames"] = frames  # the exported model generates clips of the length it learned
    pipe.defaults["dense_steps"] = dense_steps_above(pipe, state.get("local_below", 1.0))  # ...and steps as it learned
    if "distill" in state:  # the guidance is in the student's weights: it samples with the caption alone
        if teacher is None:  # a resume: the teacher and rule the run recorded
            teacher = GuidanceTeacher(load_demo(state["distill"]["teacher"]), GuidanceRule.from_dict(state["distill"]))
        teacher.pipe.to(device)
        pipe.defaults.update(distilled_defaults(pipe.defaults))
    pipe.to(device)
    modules = torch.nn.ModuleDict({"transformer": pipe.transformer, "text_encoder": pipe.text_encoder})
    if resumed_at:
        ema = {k: v.to(device) for k, v in _load_weights(out / "ema.safetensors").items()}
    else:
        ema = {k: v.detach().clone().float() for k, v in pipe.state_dict().items()}
    optimizer = torch.optim.AdamW(modules.parameters(), lr=args.lr, weight_decay=0.01, betas=(0.9, 0.99))
    forward = torch.compile(pipe.transformer) if args.compile else pipe.transformer
    data = ProceduralClips(args.seed, pipe.vocab, args.steps * args.batch, texture=state.get("texture", 0.0),
                           frames=frames, motion_weights=state.get("motion_weights"), contrasts=teacher is not None)
    loader = DataLoader(torch.utils.data.Subset(data, range(resumed_at * args.batch, len(data))),
                        batch_size=args.batch, num_workers=args.workers, pin_memory=device == "cuda",
                        drop_last=True, persistent_workers=args.workers > 0,
                        prefetch_factor=4 if args.workers else None)
    generator = torch.Generator(device).manual_seed(args.seed * 1_000_003 + resumed_at)
    unk = pipe.vocab.index(UNK)
    shift = state.get("noise_shift") or SCHEDULER_SHIFT
    local_below = state.get("local_below", 1.0)
    step, started, losses, objectives, outsides, gaps = resumed_at, time.perf_counter(), [], [], [], []

    def save() -> None:
        save_weights(pipe.state_dict(), out / "raw.safetensors")
        save_weights(ema, out / "ema.safetensors")
        state.update(step=step, steps=args.steps, lr=args.lr, elapsed_s=state_elapsed())
        atomic_write(state_file, lambda tmp: tmp.write_text(json.dumps(state, indent=1)))

    base_elapsed = state["elapsed_s"]

    def state_elapsed() -> float:
        return base_elapsed + time.perf_counter() - started

    modules.train()
    locality, consistency, half = state.get("locality", 0.0), state.get("consistency", 0.0), args.batch // 2
    penalty = None
    if locality or consistency:
        penalty = LocalityPenalty(grid, pipe.transformer.config.num_attention_heads,
                                  sample=args.locality_sample if locality else 0,
                                  anchor=state.get("locality_anchor", False),
                                  far=tuple(state.get("locality_far", ())), device=device)
    if consistency:  # the second half of each batch repeats the first and attends inside the windows only
        penalty.restrict_from = half
    # dense_fn=penalty.attend: the hook routes every self-attention through the penalty while training
    with AttentionHook(DemoAdapter(), pipe.transformer, dense_fn=penalty.attend) if penalty else nullcontext():
        for clips, ids, *contrasts in loader:
            x0 = clip_to_latents(clips.to(device, non_blocking=True))
            ids = ids.to(device, non_blocking=True)
            b = x0.shape[0]
            drop_text = torch.rand(b, 1, device=device, generator=generator) < TEXT_DROPOUT
            drop_word = (torch.rand(ids.shape, device=device, generator=generator) < WORD_DROPOUT) & (ids > unk)
            ids = torch.where(drop_word, unk, ids).masked_fill(drop_text, 0)
            if contrasts:  # a dropped caption has no contrasts: its rows steer nowhere
                contrasts = torch.where(drop_text.unsqueeze(-1), ids.unsqueeze(1), contrasts[0].to(device))
            u = torch.rand(b, device=device, generator=generator)
            sigma = noise_levels(u, shift)
            noise = torch.randn(x0.shape, device=device, generator=generator)
            s = sigma.view(b, 1, 1, 1, 1)
            noisy = (1 - s) * x0 + s * noise
            if consistency:  # same clip, caption, noise level and noise twice: dense, then windows only
                x0, noise, noisy, sigma, ids = (torch.cat([t[:half], t[:half]]) for t in (x0, noise, noisy, sigma, ids))
            sparse_rows = sparse_noise_levels(sigma, local_below)
            if penalty is not None:
                penalty.weights = sparse_rows
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, args, resumed_at)
            with torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
                target = noise - x0
                if teacher is not None:  # the teacher's guided velocity, once per distinct row
                    n = half if consistency else b
                    guided = teacher.velocity(noisy[:n], sigma[:n], ids[:n], contrasts[:n])
                    target = torch.cat([guided, guided]) if consistency else guided
                embeds = pipe.text_encoder(ids)
                velocity = forward(hidden_states=pipe.model_input(noisy), timestep=sigma * 1000,
                                   encoder_hidden_states=embeds, return_dict=False)[0]
            # every dense row counts; a windowed twin only at a noise level whose steps may run sparse
            rows = sparse_rows.new_ones(b)
            if consistency:
                rows = torch.cat([rows[:half], sparse_rows[half:]])
            loss = weighted_mse(velocity, target, rows)
            objective = loss
            if consistency:
                gap = consistency_gap(velocity, half, teacher=state.get("consistency_teacher", False),
                                      weights=sparse_rows[:half])
                gaps.append(gap.detach())
                objective = objective + consistency * gap
            if locality:
                outside = penalty.take()  # one term per layer
                outsides.append(outside.detach())
                objective = objective + locality * outside.mean()
            optimizer.zero_grad(set_to_none=True)
            objective.backward()
            torch.nn.utils.clip_grad_norm_(modules.parameters(), 1.0)
            optimizer.step()
            step += 1
            decay = min(args.ema, (1 + step - resumed_at) / (10 + step - resumed_at)) if not resumed_at else args.ema
            with torch.no_grad():
                current = pipe.state_dict()
                torch._foreach_lerp_([ema[k] for k in current], [current[k].float() for k in current], 1 - decay)
            losses.append(loss.detach())
            objectives.append(objective.detach())
            if step % args.log_every == 0 or step == args.steps:
                mean, total = torch.stack(losses).mean().item(), torch.stack(objectives).mean().item()
                losses.clear()
                objectives.clear()
                row = {"step": step, "loss": round(mean, 5), "objective": round(total, 5),
                       "lr": lr_at(step, args, resumed_at),
                       "elapsed_s": round(state_elapsed(), 1),
                       "samples_per_s": round((step - resumed_at) * args.batch / (time.perf_counter() - started), 1)}
                if outsides:
                    by_layer = torch.stack(outsides).mean(0)
                    row["outside_mass"] = round(by_layer.mean().item(), 4)
                    row["outside_by_layer"] = [round(x, 3) for x in by_layer.tolist()]
                    outsides.clear()
                if gaps:
                    row["dense_window_gap"] = round(torch.stack(gaps).mean().item(), 5)
                    gaps.clear()
                with log_file.open("a") as handle:
                    handle.write(json.dumps(row) + "\n")
                print(json.dumps(row), flush=True)
            if step % args.save_every == 0:
                save()
            if step >= args.steps or time.perf_counter() - started > args.max_minutes * 60:
                break
    save()
    result = {"step": step, "steps": args.steps, "minutes": round(state_elapsed() / 60, 2)}
    if step >= args.steps or args.export_partial:
        pipe.load_state_dict(ema)
        modules.eval()
        if args.eval_clips:
            prompts = held_out_prompts(args.eval_clips)
            guidance = pipe.defaults["guidance_scale"] if args.eval_guidance is None else args.eval_guidance
            clips = sample(pipe, prompts, seed=10_000, steps=args.eval_steps, guidance=guidance, frames=frames)
            results = [check_clip(clip, prompt) for clip, prompt in zip(clips, prompts, strict=True)]
            result["held_out_adherence"] = summarise(results)
            result["held_out_direction_by_motion"] = direction_by_motion(results)
            result["held_out_teleports"] = teleport_count(results)
            print("held-out adherence:", json.dumps(result["held_out_adherence"]),
                  "direction by motion:", json.dumps(result["held_out_direction_by_motion"]),
                  "jumping shapes:", result["held_out_teleports"], flush=True)
        card = {**result, "seed": args.seed, "batch": args.batch, "lr": args.lr, "ema": args.ema, "frames": frames,
                "texture": state.get("texture", 0.0), "locality": state.get("locality", 0.0),
                "consistency": state.get("consistency", 0.0), "locality_anchor": state.get("locality_anchor", False),
                "locality_far": state.get("locality_far", []),
                "consistency_teacher": state.get("consistency_teacher", False),
                "local_below": local_below, "motion_weights": state.get("motion_weights", {}),
                "noise_shift": shift, "layers": state["layers"], "clock": state["clock"],
                "device": device_name(device), "torch": torch.__version__}
        for key in ("init", "distill"):
            if key in state:
                card[key] = state[key]
        save_demo(pipe, out / "demo_model", card)
    if log_file.is_file() and args.plot:
        _plot_loss(log_file, out / "loss.png")
    return result


def _frame_offsets(text: str) -> list[int]:
    """``F,F`` of ``--locality-far``: positive latent-frame distances."""
    try:
        offsets = [int(part) for part in text.split(",")]
    except ValueError:
        offsets = []
    if not offsets or min(offsets) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give positive latent-frame offsets separated by commas, e.g. 4,8")
    return offsets


def _positive(text: str) -> float:
    """A finite number above 0 (``--noise-shift``)."""
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0 or not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number")
    return value


def _motion_weight(text: str) -> tuple[str, float]:
    """``MOTION=W`` of ``--motion-weight``: a known motion and a positive weight."""
    motion, _, weight = text.partition("=")
    if motion not in scenes.MOTIONS:
        raise argparse.ArgumentTypeError(f"unknown motion {motion!r}; one of {', '.join(scenes.MOTIONS)}")
    try:
        return motion, _positive(weight)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: the weight after '=' must be a positive number, e.g. {motion}=3") from None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m calibstudio.engine.models.demo.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="build/demo-train", help="checkpoint, log and export folder")
    p.add_argument("--steps", type=int, default=6000, help="planned optimiser steps (sets the LR schedule)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--warmup", type=int, default=300)
    p.add_argument("--ema", type=float, default=0.999)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=12, help="data loader processes rendering clips")
    p.add_argument("--compile", action="store_true", help="torch.compile the transformer (GPU)")
    p.add_argument("--frames", type=int,
                   help="clip length to train on (even; default: the --init model's, else 16); a longer clip makes "
                        "attention a larger share of a step, so a sparse step saves more; a resumed run keeps its own")
    p.add_argument("--layers", type=int,
                   help="transformer blocks (default: the --init model's, else 6); with --init, more than it has "
                        "grows the model (new blocks start as identities: same predictions at step 0, more "
                        "capacity after); a resumed run keeps its own")
    p.add_argument("--clock", action="store_true",
                   help="the transformer also reads each pixel's frame, row and column place in the clip (clock "
                        "channels: Wan's RoPE gives only relative offsets); with --init, a model without them gains "
                        "them (random input weights: a short loss spike); a resumed run keeps its own")
    p.add_argument("--texture", type=float, default=0.0,
                   help="peak strength (0..24, colour units) of panning background patterns; 0: plain backgrounds "
                        "as the shipped model; a resumed run keeps its own")
    p.add_argument("--locality", type=float,
                   help="weight of the locality prior (demo/locality.py): the self-attention mass outside each "
                        "head's window (own latent frame, or the same place in the next frames) is added to the "
                        "loss; 0 or unset: off; a resumed run keeps its own unless given")
    p.add_argument("--locality-anchor", action="store_true",
                   help="the temporal heads' windows (locality prior and --consistency) also hold the same place in "
                        "the first latent frame, a frame every frame can read in one layer; a resumed run keeps it")
    p.add_argument("--locality-far", type=_frame_offsets, metavar="F,F",
                   help="every second temporal head (heads 3, 7, ...) also holds the same place this many latent "
                        "frames away (e.g. 4,8), so distant frames agree within a few layers; a resumed run keeps "
                        "its own unless given")
    p.add_argument("--locality-sample", type=int, default=8,
                   help="clips of each batch the locality prior is measured on")
    p.add_argument("--consistency", type=float,
                   help="train each example twice, with dense self-attention and with attention inside the "
                        "locality windows only, and add this weight x the squared difference of the two "
                        "predictions: teaches the model to predict the same when a sparse step drops the far "
                        "keys (halves the distinct clips per batch); 0 or unset: off; a resumed run keeps its "
                        "own unless given")
    p.add_argument("--consistency-teacher", action="store_true",
                   help="with --consistency: the dense prediction is the teacher (no gradient through it in the "
                        "gap), so the gap pulls the windowed pass toward the dense one and never the dense pass "
                        "toward the windows (which cost motion); a resumed run keeps it")
    p.add_argument("--local-below", type=float,
                   help="apply the locality prior and the windowed twins of --consistency only to examples whose "
                        "noise level (sigma, 0..1) is below this: the noisiest steps, which decide the clip's layout "
                        "and motion, keep dense attention (sample with --dense-steps covering them); default 1: all "
                        "levels; a resumed run keeps its own unless given")
    p.add_argument("--motion-weight", dest="motion_weights", action="append", type=_motion_weight,
                   metavar="MOTION=W",
                   help="draw training clips of MOTION W times as often as the others (repeatable; e.g. recolor=3 "
                        f"to drill a weak motion; motions: {', '.join(scenes.MOTIONS)}); a resumed run keeps its own "
                        "unless given")
    p.add_argument("--noise-shift", type=_positive, metavar="S",
                   help="train noise levels u*S/(1+(S-1)*u), u uniform: a larger S trains the noisiest levels more "
                        "often, where a clip's motion is decided (its first 2-5 sampling steps); default: the "
                        "sampler's shift (2); a resumed run keeps its own unless given")
    p.add_argument("--max-minutes", type=float, default=8.0, help="stop and checkpoint after this long")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    p.add_argument("--init", help="start from the weights of a saved demo model folder (fine-tune) instead of random")
    p.add_argument("--distill", metavar="TEACHER",
                   help="guidance distillation: learn TEACHER's guided velocity (guidance and reverse guidance of its "
                        "defaults and sampler) from the caption alone, so the exported model samples with one pass a "
                        "step (guidance 1); starts from TEACHER's weights unless --init says otherwise")
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--save-every", type=int, default=500)
    p.add_argument("--eval-clips", type=int, default=100, help="held-out captions scored at the end")
    p.add_argument("--eval-steps", type=int, default=20)
    p.add_argument("--eval-guidance", type=float,
                   help="guidance of the held-out clips (default: the exported model's own, 1 for a distilled one)")
    p.add_argument("--export-partial", action="store_true", help="export and score even if --steps not reached")
    p.add_argument("--plot", action="store_true", help="draw loss.png from the log (needs PySide6/pyqtgraph)")
    args = p.parse_args(argv)
    if args.motion_weights is not None:
        args.motion_weights = dict(args.motion_weights)
    if args.frames is not None and (args.frames < 2 or args.frames % scenes.DEFAULT_PATCH[0]):
        p.error(f"--frames {args.frames}: the demo model's clips have a positive, even number of frames")
    if args.layers is not None and args.layers < 1:
        p.error(f"--layers {args.layers}: a model needs at least one block")
    if args.consistency and args.batch < 2:
        p.error("--consistency trains each example twice in one batch: it needs --batch 2 or more")
    return args


def main(argv: list[str] | None = None) -> int:
    try:
        result = train(parse_args(argv))
    except (ModelLoadError, RunError) as error:  # --init names no demo model; --frames differs from the run's
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
