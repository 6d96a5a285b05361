"""Guidance distillation: a student that makes in one transformer pass what the teacher's guided step makes in 2-4.

A step of the demo model's sampler costs a pass for the caption, one for the empty prompt (classifier-free
guidance) and, in the first steps, one for each contrast caption (reverse guidance,
``captions.contrast_captions``): 50 passes for the 20-step clip of v4, 69+ s on a 2-core CPU. ``train --distill
TEACHER`` fits the student's caption-only prediction to the teacher's guided velocity at the same noisy clip and
noise level (Meng et al., "On distillation of guided diffusion models", stage one), so the distilled model samples
with guidance 1: one pass a step, and its sparse steps the same share of the clip's passes as its dense ones.
"""

from __future__ import annotations

import copy
import hashlib
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch

from calibstudio.engine.models.demo import captions
from calibstudio.engine.models.demo.folder import WEIGHTS
from calibstudio.engine.models.demo.model import DemoPipeline
from calibstudio.engine.models.demo.text import tokenize

CONTRASTS = 2  # contrast captions a caption has at most: played backwards, and there and back


@dataclass(frozen=True)
class GuidanceRule:
    """The teacher's guided velocity ``u + g (c - u) + w * sum_j (c - r_j)``, the contrast terms ``r_j`` at noise
    levels ``>= contrast_above`` (the levels of the teacher sampler's first ``reverse_guidance_steps`` steps)."""

    guidance: float
    contrast_scale: float
    contrast_above: float

    @classmethod
    def of(cls, teacher: DemoPipeline) -> GuidanceRule:
        """The rule of ``teacher``'s own defaults and sampler (what ``calibstudio generate`` does with it)."""
        defaults = teacher.defaults
        scale, steps = float(defaults["reverse_guidance"]), int(defaults["reverse_guidance_steps"])
        above = math.inf
        if scale > 0 and steps > 0:
            scheduler = copy.deepcopy(teacher.scheduler)
            scheduler.set_timesteps(int(defaults["steps"]))
            sigmas = scheduler.sigmas.tolist()
            # halfway between the last contrast step's level and the next: training levels are continuous
            above = (sigmas[steps - 1] + sigmas[steps]) / 2 if steps < len(sigmas) - 1 else 0.0
        return cls(float(defaults["guidance_scale"]), scale, above)

    def as_dict(self) -> dict[str, Any]:
        """The rule as strict JSON values: "no contrast levels" (infinity) is recorded as null."""
        record = asdict(self)
        if math.isinf(self.contrast_above):
            record["contrast_above"] = None
        return record

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> GuidanceRule:
        """The rule a run recorded (other keys of the record are ignored)."""
        values = {f.name: record[f.name] for f in fields(cls)}
        if values["contrast_above"] is None:
            values["contrast_above"] = math.inf
        return cls(**values)


def weights_digest(folder: str | Path) -> str:
    """A short hash of a model folder's weights ("" if it has none): a resumed run checks that its teacher is still
    the same model."""
    path = Path(folder) / WEIGHTS
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path.is_file() else ""


def contrast_ids(text: str, vocab: list[str]) -> torch.Tensor:
    """Word ids ``[CONTRASTS, L]`` of ``text``'s contrast captions; ``text`` itself fills a missing one (its term
    ``c - r`` is then zero, as the sampler skips it)."""
    texts = list(captions.contrast_captions(text))
    return tokenize(texts + [text] * (CONTRASTS - len(texts)), vocab)


class GuidanceTeacher:
    """A frozen teacher model and its rule: :meth:`velocity` is the training target of a distilled student."""

    def __init__(self, teacher: DemoPipeline, rule: GuidanceRule | None = None) -> None:
        self.pipe, self.rule = teacher, rule or GuidanceRule.of(teacher)
        for module in (teacher.transformer, teacher.text_encoder):
            module.eval().requires_grad_(False)

    @torch.no_grad()
    def velocity(self, noisy: torch.Tensor, sigma: torch.Tensor, ids: torch.Tensor,
                 contrasts: torch.Tensor) -> torch.Tensor:
        """The guided velocity at ``noisy`` (``[B, C, F, H, W]``) and levels ``sigma`` (``[B]``) for captions
        ``ids`` (``[B, L]``) and their contrast captions ``contrasts`` (``[B, CONTRASTS, L]``), in one batched
        pass: every row's caption and empty prompt, and the contrasts of the rows at contrast levels."""
        rule, b = self.rule, noisy.shape[0]
        steer = (sigma >= rule.contrast_above).nonzero().flatten()
        rows = torch.cat([torch.arange(b, device=noisy.device)] * 2 + [steer] * CONTRASTS)
        prompts = torch.cat([ids, torch.zeros_like(ids), *contrasts[steer].unbind(1)])
        pred = self.pipe.transformer(hidden_states=self.pipe.model_input(noisy[rows]), timestep=sigma[rows] * 1000,
                                     encoder_hidden_states=self.pipe.text_encoder(prompts), return_dict=False)[0]
        cond, uncond, *contrast = pred.float().split([b, b] + [len(steer)] * CONTRASTS)
        guided = uncond + rule.guidance * (cond - uncond)
        for r in contrast:
            guided[steer] += rule.contrast_scale * (cond[steer] - r)
        return guided


def distilled_defaults(defaults: dict[str, Any]) -> dict[str, Any]:
    """A student's sampling defaults: the caption alone, one pass a step (the guidance is in its weights)."""
    return {**defaults, "guidance_scale": 1.0, "reverse_guidance": 0.0, "reverse_guidance_steps": 0}
