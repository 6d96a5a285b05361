"""Predicted end-to-end speedup of sparse attention: a deliberately simple cost model.

A dense denoising step splits into attention (cost ~ S^2 d, quadratic in the sequence length S) and
everything else (projections, MLP, norms: cost ~ S d^2, linear in S). So the attention share of a
step is ``a(S) = S / (S + S0)`` with ``S0`` proportional to the model width. Fitting the anchors
measured here for Wan-2.1 14B (attention is 45 % of a dense step at 480p/81f = 32 760 tokens and
65 % at 720p/81f = 75 600 tokens) gives ``S0 = 40 000`` tokens, which reproduces both (0.450, 0.654).

``S0`` scales with the model width ``d`` (the ratio of the two costs is ~ S / d), so for a model
whose profile records its width (``inner_dim``, or ``num_attention_heads * attention_head_dim`` as in
diffusers' Wan config) ``S0 = 40 000 * d / 5120``; otherwise Wan-14B's width is assumed and said so.

With a fraction ``density`` of attention blocks computed, and a kernel that runs the kept blocks at
the dense rate (flash-attn-4 does, within 0.94-1.16x), the step takes ``(1 - a) + a * density`` of
its dense time. This is an upper bound: real kernels lose a little at very low density.

Pure Python, no Qt: the CLI or a report can use it too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

WAN14B_S0_TOKENS = 40_000
WAN14B_WIDTH = 5120
ANCHORS = ((32_760, 0.45, "Wan 2.1 14B, 480p/81f"), (75_600, 0.65, "Wan 2.1 14B, 720p/81f"))


def model_width(model: Mapping[str, Any]) -> int | None:
    """The transformer width recorded in a profile's model identity (or its ``config``), if any."""
    for source in (model, model.get("config") or {}):
        if not isinstance(source, Mapping):
            continue
        if source.get("inner_dim"):
            return int(source["inner_dim"])
        if source.get("num_attention_heads") and source.get("attention_head_dim"):
            return int(source["num_attention_heads"]) * int(source["attention_head_dim"])
    return None


def attention_share(tokens: int, s0: float = WAN14B_S0_TOKENS) -> float:
    """Share of a dense step spent in self-attention for a sequence of ``tokens`` video tokens."""
    if tokens <= 0:
        raise ValueError(f"token count must be positive, got {tokens}")
    return tokens / (tokens + s0)


def predicted_speedup(density: float, share: float) -> float:
    """End-to-end step speedup when attention computes ``density`` of its blocks (ideal kernel)."""
    if not 0.0 <= density <= 1.0:
        raise ValueError(f"density must be in 0..1, got {density}")
    return 1.0 / ((1.0 - share) + share * density)


@dataclass(frozen=True)
class SpeedupEstimate:
    """A speedup with the assumptions that produced it, so the GUI can show both."""

    tokens: int
    share: float
    density: float
    speedup: float
    s0: float = WAN14B_S0_TOKENS
    width: int | None = None
    dense_steps: int = 0  # the first steps run dense: ``density`` is already the mean over the run's passes

    def explain(self) -> str:
        """Multi-line text for a tooltip: the formula, the share and where it comes from."""
        anchors = "; ".join(f"{share:.0%} at {tokens:,} tokens ({name})" for tokens, share, name in ANCHORS)
        width = (f"model width {self.width} from the profile" if self.width
                 else f"model width unknown: Wan-14B's {WAN14B_WIDTH} assumed")
        return (
            f"Predicted speedup = 1 / ((1 - a) + a × density) = {self.speedup:.2f}×\n"
            f"a = attention share of a dense step = S / (S + S0) = {self.share:.1%} for S = {self.tokens:,} tokens, "
            f"S0 = {self.s0:,.0f}\n"
            f"(attention ~ S², the rest ~ S; S0 = {WAN14B_S0_TOKENS:,} × width / {WAN14B_WIDTH} fitted to "
            f"Wan-14B anchors: {anchors}; {width}).\n"
            f"Assumes the kept blocks run at the dense kernel rate and the rest is unchanged: an upper bound."
            + (f"\nThe first {self.dense_steps} steps run dense: density {self.density:.1%} is over the whole clip."
               if self.dense_steps else "")
        )


def estimate(tokens: int, density: float, model: Mapping[str, Any] | None = None,
             dense_steps: int = 0) -> SpeedupEstimate:
    """Speedup estimate for a profile's token count at a whole-model density (``model``: its identity).

    ``density`` is the mean over the clip's steps, each weighed by its transformer passes (``Profile.density``),
    dense first steps included (``dense_steps``, for the text).
    """
    width = model_width(model or {})
    s0 = WAN14B_S0_TOKENS * (width / WAN14B_WIDTH if width else 1.0)
    share = attention_share(tokens, s0)
    return SpeedupEstimate(tokens=tokens, share=share, density=density, speedup=predicted_speedup(density, share),
                           s0=s0, width=width, dense_steps=dense_steps)
