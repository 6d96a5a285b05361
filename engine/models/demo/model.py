"""The bundled demo model: a small pixel-space ``WanTransformer3DModel``, its word encoder, and its adapter.

Pixel space, no VAE: clips are RGB frames of 64x64 in [-1, 1] (32 in the shipped model); a (2, 4, 4)
patch makes 4096 video tokens of 32 frames. A VAE would have to be trained and shipped too, would
cost a decode per clip and per preview, and would shrink the token count below what makes attention
sparsity real; the shapes are flat colours, which a pixel model learns quickly. Because it is a Wan
transformer, the same adapter code (self-attention processor, hook, prediction) serves Wan and the demo model.

Weights ship in ``resources/demo_model/`` as one fp16 safetensors file (``transformer.*`` and
``text_encoder.*``) next to ``config.json`` (configs, vocabulary, defaults), a model card and a
calibration profile made with ``calibstudio calibrate`` on ``resources/demo_prompts.txt``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler, WanTransformer3DModel

from calibstudio.engine.atomic import atomic_write
from calibstudio.engine.models.base import Conditioning, ModelLoadError
from calibstudio.engine.models.demo import captions, scenes
from calibstudio.engine.models.demo.folder import CONFIG, NAME, WEIGHTS, default_folder
from calibstudio.engine.models.demo.text import WordEncoder, grammar_vocabulary, tokenize
from calibstudio.engine.models.wan import WanAdapter

# Clock channels (``train --clock``): each pixel's frame, row and column place in the clip (-1..1), read
# after the 3 colour channels. Wan's RoPE tells a token how far other tokens are, not where it is itself;
# a colour change or a one-way path over the whole clip needs the latter (the shipped model's misses are
# reversed or palindromic in time: docs/demo-model/motion-experiment.json).
CLOCK_CHANNELS = 3
TRANSFORMER_CONFIG: dict[str, Any] = {
    "patch_size": list(scenes.DEFAULT_PATCH), "num_attention_heads": 4, "attention_head_dim": 64,
    "in_channels": 3, "out_channels": 3, "text_dim": 128, "freq_dim": 128, "ffn_dim": 1024, "num_layers": 6,
    "cross_attn_norm": True, "qk_norm": "rms_norm_across_heads", "rope_max_seq_len": 64,
}
TEXT_CONFIG: dict[str, Any] = {"dim": 128, "layers": 2, "heads": 4}
SCHEDULER_SHIFT = 2.0
# The sampler (config.json "sampler" and "scheduler_shift"): "euler" (first order, flow matching; v5 ships 20 steps
# at shift 2) or "unipc" (UniPC multistep in flow mode, Wan's own default, second order). A larger shift spends more
# of the steps at high noise, where the motion is decided: UniPC 14 steps at shift 5 read held-out 360 colour /
# shape / direction 97.2 / 95.0 / 87.8% vs 95.6 / 93.6 / 84.7% for v4's 20 Euler steps, in 36 transformer passes
# instead of 50; with 3 dense steps its sparse clip was 29.9 dB from the dense one (target 30), 1.497x: not shipped
# (docs/demo-model/sampler-experiment.json). v5's distillation made 20 Euler steps cost 20 passes instead.
SAMPLERS = ("euler", "unipc")


def make_scheduler(sampler: str = "euler",
                   shift: float = SCHEDULER_SHIFT) -> FlowMatchEulerDiscreteScheduler | UniPCMultistepScheduler:
    """The diffusers scheduler of ``sampler`` (one of ``SAMPLERS``) at noise shift ``shift``."""
    if not shift > 0:
        raise ValueError(f"scheduler shift must be positive, got {shift}")
    if sampler == "euler":
        return FlowMatchEulerDiscreteScheduler(shift=shift)
    if sampler == "unipc":
        return UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=shift)
    raise ValueError(f"unknown sampler {sampler!r}: use one of {', '.join(SAMPLERS)}")


# Defaults of a freshly built model (training starts from them; an exported model's config.json carries
# its own: the shipped v5 has 32 frames, 5 dense steps and guidance 1, see its model card).
# threshold: the retained-mass tau a shipped profile is meant for (at 0.99 and above v1's diffuse
# attention kept so many blocks that every layer ran dense).
# error_bound: calibration raises the tau of heads whose attention output is off by more than this
# (engine/error_bound.py). 0.05 brought the locality models' sparse adherence level with dense
# (docs/demo-model/consistency-experiment.json).
# dense_steps: train exports the steps above its --local-below noise level.
# reverse_guidance(_steps): guidance away from the caption's motion played backwards and, for a straight move,
# there and back (captions.contrast_captions), each with this weight, in the first steps (Conditioning.contrast_*);
# 0 = off. v4 used 4 for its 5 dense steps: held-out direction 77 -> 84.7%
# (docs/demo-model/reverse-guidance-experiment.json); the shipped v5 has it in its weights (train --distill) and 0 here.
DEFAULTS: dict[str, int | float] = {"height": scenes.DEFAULT_HEIGHT, "width": scenes.DEFAULT_WIDTH,
                                    "frames": scenes.DEFAULT_FRAMES, "steps": 20, "guidance_scale": 4.0,
                                    "threshold": 0.9, "error_bound": 0.05, "dense_steps": 0,
                                    "reverse_guidance": 0.0, "reverse_guidance_steps": 0}


class DemoPipeline:
    """What the engine drives: transformer, word encoder, vocabulary and a flow-matching scheduler."""

    def __init__(self, transformer: WanTransformer3DModel, text_encoder: WordEncoder, vocab: list[str],
                 name_or_path: str = NAME, defaults: dict[str, int | float] | None = None,
                 sampler: str = "euler", shift: float = SCHEDULER_SHIFT) -> None:
        self.transformer = transformer
        self.text_encoder = text_encoder
        self.vocab = vocab
        self.defaults = {**DEFAULTS, **(defaults or {})}  # clip size, steps, recommended threshold
        self.sampler, self.shift = sampler, float(shift)
        self.scheduler = make_scheduler(sampler, self.shift)
        self.name_or_path = name_or_path

    @classmethod
    def fresh(cls, seed: int = 0, layers: int = TRANSFORMER_CONFIG["num_layers"], clock: bool = False) -> DemoPipeline:
        """Randomly initialised (the start of training), with ``layers`` transformer blocks and, with
        ``clock``, the clock channels."""
        torch.manual_seed(seed)
        vocab = grammar_vocabulary()
        in_channels = TRANSFORMER_CONFIG["in_channels"] + (CLOCK_CHANNELS if clock else 0)
        transformer = WanTransformer3DModel(**{**TRANSFORMER_CONFIG, "num_layers": layers, "in_channels": in_channels})
        return cls(transformer, WordEncoder(len(vocab), **TEXT_CONFIG), vocab)

    @property
    def has_clock(self) -> bool:
        """Whether the transformer reads the clock channels after the colours (``train --clock``)."""
        return self.transformer.config.in_channels == TRANSFORMER_CONFIG["in_channels"] + CLOCK_CHANNELS

    def model_input(self, latents: torch.Tensor) -> torch.Tensor:
        """What the transformer reads for pixel latents ``[B, 3, F, H, W]``: the clock channels appended
        where it has them."""
        if not self.has_clock:
            return latents
        b, _, f, h, w = latents.shape
        axes = (torch.linspace(-1.0, 1.0, n, device=latents.device, dtype=latents.dtype) for n in (f, h, w))
        clock = torch.stack(torch.meshgrid(*axes, indexing="ij"))
        return torch.cat([latents, clock.expand(b, -1, -1, -1, -1)], dim=1)

    def add_clock(self, seed: int = 0) -> None:
        """Let a model trained without them read the clock channels: its patch embedding gains their input
        weights, drawn at the scale of its colour weights. Not zeros: zero weights stayed unused through a
        fine-tune, since while nothing downstream reads a feature its weights' gradient averages out; random
        ones cost a short loss spike but are seen from the first step (docs/demo-model/motion-experiment.json)."""
        if self.has_clock:
            return
        state = self.transformer.state_dict()
        weight = state["patch_embedding.weight"]
        generator = torch.Generator().manual_seed(seed)
        extra = torch.randn(weight.shape[0], CLOCK_CHANNELS, *weight.shape[2:], generator=generator)
        state["patch_embedding.weight"] = torch.cat([weight, (extra * weight.float().std()).to(weight)], dim=1)
        widened = WanTransformer3DModel(**{**transformer_config(self.transformer),
                                           "in_channels": weight.shape[1] + CLOCK_CHANNELS})
        self._replace_transformer(widened, state)

    def _replace_transformer(self, transformer: WanTransformer3DModel, state: dict[str, torch.Tensor]) -> None:
        """Use ``transformer``, holding ``state``, on the old one's device and in its train/eval mode."""
        old = self.transformer
        transformer.load_state_dict(state, strict=True)
        self.transformer = transformer.to(old.device).train(old.training)

    def deepen(self, layers: int, seed: int = 0) -> None:
        """Grow the transformer to ``layers`` blocks without changing what it predicts, so a trained model
        can gain capacity and keep training (``train --init ... --layers N``) instead of starting over.

        The new blocks (spread evenly between the old ones) start with zero output projections: their
        attention and FFN add nothing until training moves those weights, which their gradient does at
        once (it is the block's input, not zero). The old blocks and every other weight are kept.
        """
        old = self.transformer
        have = old.config.num_layers
        if layers < have:
            raise ValueError(f"the model has {have} blocks; it can only grow (asked for {layers})")
        torch.manual_seed(seed)
        grown = WanTransformer3DModel(**{**transformer_config(old), "num_layers": layers})
        # Old block i goes to place round(i * layers / have): 6 -> 8 puts new blocks at 2 and 6.
        places = {round(i * layers / have): i for i in range(have)}
        state = {k: v for k, v in old.state_dict().items() if not k.startswith("blocks.")}
        for place, block in enumerate(grown.blocks):
            if place in places:
                state.update({f"blocks.{place}.{k}": v for k, v in old.blocks[places[place]].state_dict().items()})
                continue
            for out in (block.attn1.to_out[0], block.attn2.to_out[0], block.ffn.net[2]):
                torch.nn.init.zeros_(out.weight)
                torch.nn.init.zeros_(out.bias)
            state.update({f"blocks.{place}.{k}": v for k, v in block.state_dict().items()})
        self._replace_transformer(grown, state)

    @property
    def _execution_device(self) -> torch.device:
        return self.transformer.device

    def to(self, device: str | torch.device) -> DemoPipeline:
        self.transformer.to(device)
        self.text_encoder.to(device)
        return self

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {**{f"transformer.{k}": v for k, v in self.transformer.state_dict().items()},
                **{f"text_encoder.{k}": v for k, v in self.text_encoder.state_dict().items()}}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for prefix, module in (("transformer.", self.transformer), ("text_encoder.", self.text_encoder)):
            part = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            module.load_state_dict(part, strict=True)

    @torch.no_grad()
    def encode_text(self, texts: list[str]) -> torch.Tensor:
        ids = tokenize(texts, self.vocab).to(self._execution_device)
        return self.text_encoder(ids)


def transformer_config(transformer: WanTransformer3DModel) -> dict[str, Any]:
    """The transformer's own settings under the keys of :data:`TRANSFORMER_CONFIG` (what config.json holds)."""
    config = transformer.config
    return {k: list(config[k]) if isinstance(config[k], tuple) else config[k] for k in TRANSFORMER_CONFIG}


def save_weights(state: dict[str, torch.Tensor], path: Path) -> None:
    """``state`` as one fp16 safetensors file, written atomically (shipped weights and training checkpoints)."""
    from safetensors.torch import save_file

    weights = {k: v.detach().to("cpu", torch.float16).contiguous() for k, v in state.items()}
    atomic_write(path, lambda tmp: save_file(weights, tmp))


def save_demo(pipe: DemoPipeline, folder: str | Path, card: dict[str, Any] | None = None) -> Path:
    """Write the shipped form: fp16 weights and ``config.json`` (atomically, each file)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_weights(pipe.state_dict(), folder / WEIGHTS)
    config = {"name": NAME, "transformer": transformer_config(pipe.transformer), "text_encoder": TEXT_CONFIG,
              "vocab": pipe.vocab, "scheduler_shift": pipe.shift, "sampler": pipe.sampler,
              "defaults": pipe.defaults, "training": card or {}}
    atomic_write(folder / CONFIG, lambda tmp: tmp.write_text(json.dumps(config, indent=1)))
    return folder


def load_demo(folder: str | Path | None = None, device: str = "cpu") -> DemoPipeline:
    """Load the demo model (the shipped one by default) in fp32; a clear error if its files are missing."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder) if folder is not None else default_folder()
    fix = ("reinstall calibstudio" if folder == default_folder()
           else "export it again with `python -m calibstudio.engine.models.demo.train`")
    missing = [name for name in (CONFIG, WEIGHTS) if not (folder / name).is_file()]
    if missing:
        raise ModelLoadError(f"the demo model in {folder} lacks {', '.join(missing)}; {fix}")
    try:
        config = json.loads((folder / CONFIG).read_text())
        vocab = list(config["vocab"])
        transformer = WanTransformer3DModel(**config["transformer"])
        text_encoder = WordEncoder(len(vocab), **config["text_encoder"])
        pipe = DemoPipeline(transformer, text_encoder, vocab, name_or_path=NAME, defaults=config.get("defaults"),
                            sampler=config.get("sampler", "euler"),
                            shift=float(config.get("scheduler_shift", SCHEDULER_SHIFT)))
        pipe.load_state_dict({k: v.float() for k, v in load_file(folder / WEIGHTS).items()})
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, SafetensorError) as error:
        raise ModelLoadError(f"the demo model in {folder} is damaged ({error}); {fix}") from None
    transformer.eval()
    text_encoder.eval()
    return pipe.to(device)


def clip_to_uint8(latents: torch.Tensor) -> np.ndarray:
    """Pixel latents ``[1, 3, F, H, W]`` in [-1, 1] → ``uint8 [F, H, W, 3]``."""
    frames = ((latents[0].float().clamp(-1, 1) + 1) * 127.5).round().byte()
    return frames.permute(1, 2, 3, 0).cpu().numpy()


def clip_to_latents(clip: np.ndarray | torch.Tensor) -> torch.Tensor:
    """``uint8 [..., F, H, W, 3]`` → float ``[..., 3, F, H, W]`` in [-1, 1] (what the model denoises)."""
    x = torch.as_tensor(clip).float().div(127.5).sub(1.0)
    return x.movedim(-1, -4)


class DemoAdapter(WanAdapter):
    """The demo model through the Wan code path; only the text side and the pixel space differ."""

    def token_grid(self, pipe: Any, height: int, width: int, frames: int) -> tuple[int, int, int]:
        pt, ph, pw = pipe.transformer.config.patch_size
        if frames % pt or height % ph or width % pw or min(frames, height, width) <= 0:
            raise ValueError(f"the demo model needs frames a multiple of {pt} and height, width multiples of "
                             f"{ph}; got {frames} frames of {height}x{width}")
        return (frames // pt, height // ph, width // pw)

    def encode(self, pipe: Any, prompt: str, negative_prompt: str | None, guidance_scale: float) -> Conditioning:
        """The caption, the negative prompt and, where the model's defaults ask for reverse guidance, the
        caption's motion played backwards and there and back (``captions.contrast_captions``) to steer away
        from in the first steps."""
        positive = pipe.encode_text([prompt])
        negative = pipe.encode_text([negative_prompt or ""]) if guidance_scale > 1.0 else None
        scale, steps = float(pipe.defaults["reverse_guidance"]), int(pipe.defaults["reverse_guidance_steps"])
        texts = captions.contrast_captions(prompt) if scale > 0 and steps > 0 else ()
        contrasts = tuple(pipe.encode_text(list(texts)).split(1)) if texts else ()
        return Conditioning(positive, negative, guidance_scale, contrasts, scale, steps)

    def initial_latents(self, pipe: Any, height: int, width: int, frames: int, seed: int) -> torch.Tensor:
        self.token_grid(pipe, height, width, frames)
        generator = torch.Generator("cpu").manual_seed(seed)
        noise = torch.randn(1, 3, frames, height, width, generator=generator)
        return noise.to(pipe._execution_device)

    def predict(self, pipe: Any, latents: torch.Tensor, t: torch.Tensor, embeds: torch.Tensor) -> torch.Tensor:
        return super().predict(pipe, pipe.model_input(latents), t, embeds)

    def decode(self, pipe: Any, latents: torch.Tensor) -> np.ndarray:
        return clip_to_uint8(latents)

    def preview(self, latents: torch.Tensor) -> np.ndarray:
        """The middle frame in true colour (pixel space: no decode needed)."""
        return clip_to_uint8(latents[:, :, latents.shape[2] // 2 : latents.shape[2] // 2 + 1])[0]

    def identity(self, pipe: Any) -> dict[str, Any]:
        config = {k: v for k, v in dict(pipe.transformer.config).items() if not k.startswith("_")}
        text = json.dumps({"transformer": config, "vocab": pipe.vocab}, sort_keys=True, default=str)
        return {"name": NAME, "class": type(pipe.transformer).__name__,
                "config_hash": hashlib.sha256(text.encode()).hexdigest()[:16],
                "inner_dim": int(config["num_attention_heads"] * config["attention_head_dim"])}
