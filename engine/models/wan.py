"""Wan 2.1 text-to-video through diffusers (``WanPipeline``), and its self-attention processor."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from diffusers.models.activations import GELU
from diffusers.models.transformers.transformer_wan import WanAttention, _get_qkv_projections

from calibstudio.engine.attention_hook import attend_at
from calibstudio.engine.models.base import Conditioning, ModelLoadError
from calibstudio.kernels.norm_rope import needs_autograd, norm_rope

if TYPE_CHECKING:
    from diffusers import WanPipeline

# What `WanPipeline.from_pretrained` reads from a local folder.
REQUIRED = {
    "model_index.json": "the pipeline index",
    "scheduler/scheduler_config.json": "the scheduler",
    "transformer/config.json": "the transformer config",
    "vae/config.json": "the VAE config",
    "text_encoder/config.json": "the text encoder config",
    "tokenizer": "the tokenizer folder",
}


def _gelu_in_epilogue(module: GELU) -> Callable[[torch.Tensor], torch.Tensor]:
    """Wan's FFN up-projection and its tanh GELU as one cuBLASLt GEMM with a GELU-bias epilogue (on CUDA).

    Saves a full pass over the (B, S, ffn_dim) activation, which ``torch.compile`` cannot fuse into
    cuBLAS: -4.6 ms of a 396 ms compiled step (4 Wan-14B blocks, 720p, density 1/8) on an H100.
    """

    def forward(hidden_states: torch.Tensor) -> torch.Tensor:
        # The CPU's addmm epilogue is not guaranteed to be the tanh GELU; the fused op has no backward.
        if not hidden_states.is_cuda or needs_autograd(hidden_states, module.proj.weight, module.proj.bias):
            return GELU.forward(module, hidden_states)
        out = torch._addmm_activation(module.proj.bias, hidden_states.flatten(0, -2), module.proj.weight.t(),
                                      use_gelu=True)
        return out.unflatten(0, hidden_states.shape[:-1])

    return forward


class WanSelfAttnProcessor:
    """diffusers' Wan self-attention with the attention call itself handed to the hook installed on
    transformer ``site`` (the processor holds no hook, so one object serves every job)."""

    def __init__(self, site: int, layer: int) -> None:
        self.site = site
        self.layer = layer

    def __call__(
        self,
        attn: WanAttention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        query, key, value = _get_qkv_projections(attn, hidden_states, None)
        if rotary_emb is not None:  # Wan always passes it: norm and RoPE fused into one kernel on CUDA
            query = norm_rope(query, attn.norm_q, attn.heads, *rotary_emb)
            key = norm_rope(key, attn.norm_k, attn.heads, *rotary_emb)
        else:
            query = attn.norm_q(query).unflatten(2, (attn.heads, -1))
            key = attn.norm_k(key).unflatten(2, (attn.heads, -1))
        value = value.unflatten(2, (attn.heads, -1))
        out = attend_at(self.site, self.layer, query, key, value).flatten(2, 3).type_as(query)
        return attn.to_out[1](attn.to_out[0](out))


class WanAdapter:
    """Wan 2.1 T2V (1.3B, 14B) and the bundled demo model, which shares its transformer class."""

    def token_grid(self, pipe: Any, height: int, width: int, frames: int) -> tuple[int, int, int]:
        t_patch, h_patch, w_patch = pipe.transformer.config.patch_size
        temporal, spatial = pipe.vae_scale_factor_temporal, pipe.vae_scale_factor_spatial
        if height % (spatial * h_patch) or width % (spatial * w_patch):
            raise ValueError(f"height and width must be multiples of {spatial * h_patch}, got {height}x{width}")
        if (frames - 1) % temporal:
            raise ValueError(f"frames must be {temporal}k+1 (e.g. {temporal * 4 + 1}), got {frames}")
        latent_frames = (frames - 1) // temporal + 1
        return (latent_frames // t_patch, height // spatial // h_patch, width // spatial // w_patch)

    def self_attention_modules(self, transformer: torch.nn.Module) -> Iterator[tuple[int, torch.nn.Module]]:
        for layer, block in enumerate(transformer.blocks):
            yield layer, block.attn1

    def make_processor(self, site: int, layer: int) -> WanSelfAttnProcessor:
        return WanSelfAttnProcessor(site, layer)

    def fused_forwards(self, transformer: torch.nn.Module) -> Iterator[tuple[torch.nn.Module, Callable]]:
        for block in transformer.blocks:
            up = block.ffn.net[0]
            if isinstance(up, GELU) and up.approximate == "tanh" and up.proj.bias is not None:
                yield up, _gelu_in_epilogue(up)

    def encode(self, pipe: Any, prompt: str, negative_prompt: str | None, guidance_scale: float) -> Conditioning:
        guided = guidance_scale > 1.0
        positive, negative = pipe.encode_prompt(prompt=prompt, negative_prompt=negative_prompt or "",
                                                do_classifier_free_guidance=guided, device=pipe._execution_device)
        dtype = pipe.transformer.dtype
        return Conditioning(positive.to(dtype), negative.to(dtype) if guided else None, guidance_scale)

    def initial_latents(self, pipe: Any, height: int, width: int, frames: int, seed: int) -> torch.Tensor:
        generator = torch.Generator("cpu").manual_seed(seed)  # on the CPU: a seed gives one clip on any device
        latents = pipe.prepare_latents(1, pipe.transformer.config.in_channels, height, width, frames,
                                       torch.float32, torch.device("cpu"), generator)
        return latents.to(pipe._execution_device)

    def predict(self, pipe: Any, latents: torch.Tensor, t: torch.Tensor, embeds: torch.Tensor) -> torch.Tensor:
        return pipe.transformer(hidden_states=latents, timestep=t.expand(latents.shape[0]),
                                encoder_hidden_states=embeds, return_dict=False)[0]

    @torch.no_grad()
    def decode(self, pipe: Any, latents: torch.Tensor) -> np.ndarray:
        vae = pipe.vae
        latents = latents.to(vae.device, vae.dtype)
        mean = torch.tensor(vae.config.latents_mean).view(1, -1, 1, 1, 1).to(latents)
        std = torch.tensor(vae.config.latents_std).view(1, -1, 1, 1, 1).to(latents)
        video = vae.decode(latents * std + mean, return_dict=False)[0]
        frames = pipe.video_processor.postprocess_video(video, output_type="np")[0]
        return (np.clip(frames, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)

    def preview(self, latents: torch.Tensor) -> np.ndarray:
        """A cheap look at the current latent: its middle frame, three channels stretched to uint8.

        No VAE decode (a Wan decode costs seconds), so it shows layout and motion, not true colour.
        """
        frame = latents[0, :3, latents.shape[2] // 2].float()
        low = frame.amin(dim=(1, 2), keepdim=True)
        high = frame.amax(dim=(1, 2), keepdim=True)
        image = ((frame - low) / (high - low).clamp_min(1e-6) * 255).round().byte()
        return image.permute(1, 2, 0).cpu().numpy()

    def identity(self, pipe: Any) -> dict[str, Any]:
        config = dict(pipe.transformer.config)
        text = json.dumps({k: v for k, v in config.items() if not k.startswith("_")}, sort_keys=True, default=str)
        return {
            "name": Path(str(getattr(pipe, "name_or_path", "") or "wan")).name or "wan",
            "class": type(pipe.transformer).__name__,
            "config_hash": hashlib.sha256(text.encode()).hexdigest()[:16],
            "inner_dim": int(config["num_attention_heads"] * config["attention_head_dim"]),
        }


def check_wan_folder(path: str | Path) -> Path:
    """Raise :class:`ModelLoadError` naming every missing part of a local diffusers Wan folder."""
    folder = Path(path)
    if not folder.is_dir():
        raise ModelLoadError(f"model folder {folder} does not exist")
    missing = [f"{name} ({what})" for name, what in REQUIRED.items() if not (folder / name).exists()]
    weights = {part: any((folder / part).glob("*.safetensors")) or any((folder / part).glob("*.bin"))
               for part in ("transformer", "vae", "text_encoder")}
    missing += [f"{part}/*.safetensors (the {part} weights)" for part, found in weights.items() if not found]
    if missing:
        raise ModelLoadError(f"{folder} is not a complete diffusers Wan folder; missing: {', '.join(missing)}. "
                             f"Download the full Wan2.1-T2V-*-Diffusers repository into it.")
    return folder


def load_wan(path: str | Path, dtype: torch.dtype | None = None, device: str | None = None) -> WanPipeline:
    """Load a Wan pipeline from a local folder only (no hub access), with clear errors."""
    from diffusers import WanPipeline

    folder = check_wan_folder(path)
    try:
        pipe = WanPipeline.from_pretrained(str(folder), local_files_only=True, torch_dtype=dtype)
    except (OSError, ValueError, KeyError) as error:
        raise ModelLoadError(f"could not load {folder} as a Wan pipeline: {error}") from None
    return pipe.to(device) if device else pipe
