"""A denoising trajectory advanced one step at a time (model specifics come from the adapter).

``compare`` needs the dense and the sparse trajectory of one seed advanced in lockstep (step k
dense, then step k sparse) so both are timed under the same machine conditions; a pipeline's
``__call__`` runs a whole trajectory at once, so the engine drives the steps itself, the same way
diffusers' ``WanPipeline.__call__`` does (classifier-free guidance, the scheduler's step).
"""

from __future__ import annotations

import copy
from typing import Any

import torch

from calibstudio.engine.attention_hook import AttentionHook
from calibstudio.engine.models.base import Conditioning, VideoModelAdapter


class Trajectory:
    """One trajectory: its own scheduler copy, latents and (optional) attention hook."""

    def __init__(self, pipe: Any, adapter: VideoModelAdapter, conditioning: Conditioning, latents: torch.Tensor,
                 steps: int, hook: AttentionHook | None = None) -> None:
        self.pipe = pipe
        self.adapter = adapter
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

    @torch.no_grad()
    def step(self) -> None:
        """Advance one denoising step (with the hook installed for just this step)."""
        t = self.timesteps[self.index]
        model_input = self.latents.to(self.pipe.transformer.dtype)
        c, predict = self.conditioning, self.adapter.predict
        if self.hook is not None:
            self.hook.install()
        try:
            cond = noise = predict(self.pipe, model_input, t, c.prompt_embeds)
            if c.negative_embeds is not None:
                uncond = predict(self.pipe, model_input, t, c.negative_embeds)
                noise = uncond + c.guidance_scale * (cond - uncond)
            for contrast in c.contrasts_at(self.index):
                noise = noise + c.contrast_scale * (cond - predict(self.pipe, model_input, t, contrast))
        finally:
            if self.hook is not None:
                self.hook.remove()
        self.latents = self.scheduler.step(noise, t, self.latents, return_dict=False)[0]
        self.index += 1
