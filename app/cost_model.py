"""Predicted end-to-end speedup of sparse attention: a deliberately simple cost model.

A dense denoising step splits into attention (cost ~ S^2 d, quadratic in the sequence length S) and
everything else (projections, MLP, norms: cost ~ S d^2, linear in S). So the attention share of a
step is ``a(S) = S / (S + S0)`` with ``S0`` proportional to the model width. Fitting the anchors
measured here for Wan-2.1 14B (attention is 45 % of a dense step at 480p/81f = 32 760 tokens and
65 % at 720p/81f = 75 600 tokens) gives ``S0 = 40 000`` tokens, which reproduces both (0.450, 0.654).

With a fraction ``density`` of attention blocks computed, and a kernel that runs the kept blocks at
the dense rate (flash-attn-4 does, within 0.94-1.16x), the step takes ``(1 - a) + a * density`` of
its dense time. This is an upper bound: real kernels lose a little at very low density.

Pure Python, no Qt: the CLI or a report can use it too.
"""

from __future__ import annotations

from dataclasses import dataclass

WAN14B_S0_TOKENS = 40_000
ANCHORS = ((32_760, 0.45, "Wan 2.1 14B, 480p/81f"), (75_600, 0.65, "Wan 2.1 14B, 720p/81f"))


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

    def explain(self) -> str:
        """Multi-line text for a tooltip: the formula, the share and where it comes from."""
        anchors = "; ".join(f"{share:.0%} at {tokens:,} tokens ({name})" for tokens, share, name in ANCHORS)
        return (
            f"Predicted speedup = 1 / ((1 - a) + a × density) = {self.speedup:.2f}×\n"
            f"a = attention share of a dense step = S / (S + {WAN14B_S0_TOKENS:,}) = {self.share:.1%} "
            f"for S = {self.tokens:,} tokens\n"
            f"(attention ~ S², the rest ~ S; S0 fitted to Wan-14B anchors: {anchors}).\n"
            f"Assumes the kept blocks run at the dense kernel rate and the rest is unchanged: an upper bound."
        )


def estimate(tokens: int, density: float) -> SpeedupEstimate:
    """Speedup estimate for a profile's token count at a whole-model density."""
    share = attention_share(tokens)
    return SpeedupEstimate(tokens=tokens, share=share, density=density, speedup=predicted_speedup(density, share))
