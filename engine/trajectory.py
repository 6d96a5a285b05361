"""A denoising trajectory advanced one step at a time.

``compare`` needs the dense and the sparse trajectory of one seed advanced in lockstep (step k
dense, then step k sparse) so both are timed under the same machine conditions; a pipeline's
``__call__`` runs a whole trajectory at once, so the engine drives the steps itself. The step is
the same as diffusers' ``WanPipeline.__call__`` (text-to-video, classifier-free guidance).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from calibstudio.engine.attention_hook import AttentionHook


@dataclass(frozen=True)
class Conditioning:
    """Encoded prompt (and negative prompt when guidance is on), shared by the trajectories of a job."""

    prompt_embeds: torch.Tensor
    negative_embeds: torch.Tensor | None
    guidance_scale: float


def encode(pipe: Any, prompt: str, negative_prompt: str | None, guidance_scale: float) -> Conditioning:
    """Encode a prompt once for every trajectory of a job."""
    device = pipe._execution_device
    guided = guidance_scale > 1.0
    positive, negative = pipe.encode_prompt(prompt=prompt, negative_prompt=negative_prompt or "",
                                            do_classifier_free_guidance=guided, device=device)
    dtype = pipe.transformer.dtype
    return Conditioning(positive.to(dtype), negative.to(dtype) if guided else None, guidance_scale)


def initial_latents(pipe: Any, height: int, width: int, frames: int, seed: int) -> torch.Tensor:
    """Start noise from ``seed``, drawn on the CPU so a seed gives the same clip on any device."""
    generator = torch.Generator("cpu").manual_seed(seed)
    latents = pipe.prepare_latents(1, pipe.transformer.config.in_channels, height, width, frames,
                                   torch.float32, torch.device("cpu"), generator)
    return latents.to(pipe._execution_device)


class Trajectory:
    """One trajectory: its own scheduler copy, latents and (optional) attention hook."""

    def __init__(self, pipe: Any, conditioning: Conditioning, latents: torch.Tensor, steps: int,
                 hook: AttentionHook | None = None) -> None:
        self.pipe = pipe
        self.conditioning = conditioning
        self.latents = latents.clone()
        self.scheduler = copy.deepcopy(pipe.scheduler)
        self.scheduler.set_timesteps(steps, device=latents.device)
        self.scheduler.set_begin_index(0)
        self.timesteps = self.scheduler.timesteps
        self.index = 0
        self.hook = hook
        if hook is not None:
            hook.step_source = lambda: self.index

    @property
    def done(self) -> bool:
        return self.index >= len(self.timesteps)

    def _predict(self, latents: torch.Tensor, t: torch.Tensor, embeds: torch.Tensor) -> torch.Tensor:
        return self.pipe.transformer(hidden_states=latents, timestep=t.expand(latents.shape[0]),
                                     encoder_hidden_states=embeds, return_dict=False)[0]

    @torch.no_grad()
    def step(self) -> None:
        """Advance one denoising step (with the hook installed for just this step)."""
        t = self.timesteps[self.index]
        model_input = self.latents.to(self.pipe.transformer.dtype)
        c = self.conditioning
        if self.hook is not None:
            self.hook.install()
        try:
            noise = self._predict(model_input, t, c.prompt_embeds)
            if c.negative_embeds is not None:
                uncond = self._predict(model_input, t, c.negative_embeds)
                noise = uncond + c.guidance_scale * (noise - uncond)
        finally:
            if self.hook is not None:
                self.hook.remove()
        self.latents = self.scheduler.step(noise, t, self.latents, return_dict=False)[0]
        self.index += 1


@torch.no_grad()
def decode(pipe: Any, latents: torch.Tensor) -> np.ndarray:
    """Latents to frames: ``uint8 [frames, height, width, 3]`` (as ``WanPipeline`` decodes them)."""
    vae = pipe.vae
    latents = latents.to(vae.device, vae.dtype)
    mean = torch.tensor(vae.config.latents_mean).view(1, -1, 1, 1, 1).to(latents)
    std = torch.tensor(vae.config.latents_std).view(1, -1, 1, 1, 1).to(latents)
    video = vae.decode(latents * std + mean, return_dict=False)[0]
    frames = pipe.video_processor.postprocess_video(video, output_type="np")[0]
    return (np.clip(frames, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
