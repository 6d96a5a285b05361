"""Error-bounded calibration: per-head threshold floors from the attention-output error of the masks.

Calibration keeps, per row, the fewest key blocks whose attention *mass* reaches tau. Mass is not
what a clip is sensitive to: in the locality-trained demo model one head of 24, at 13% density,
decided whether the sparse clip was the dense clip (its relative output error at tau 0.9 was
0.093, most heads' under 0.03), while keeping whole layers or the first steps dense changed nothing
(``docs/demo-model/consistency-experiment.json``).

So, after the mass pass, a second dense pass on a few prompts measures every (step bin, layer,
head)'s relative attention-output error at a ladder of thresholds (:data:`CANDIDATES`), and each
head gets a *floor*: the lowest rung from which every higher rung is within the bound (dense when
none is). A head then runs at ``max(tau, floor)`` for every tau the user picks; the profile folds
the floor into its entry levels (:func:`calibstudio.engine.profile.apply_floor`).
"""

from __future__ import annotations

import numpy as np
import torch

from calibstudio.engine.profile import NEVER, Profile, threshold_level

CANDIDATES = (0.9, 0.95, 0.99, 0.999)  # then dense; each rung costs one sparse attention per call
_LEVELS = tuple(threshold_level(t) for t in CANDIDATES)


class ErrorRecorder:
    """Accumulates, along a dense trajectory, each head's squared output error at every candidate.

    The error of a call is ``sum((sparse - dense)^2)`` over batch, tokens and channels, per head;
    the relative error of a (bin, layer, head) is ``sqrt(sum of errors / sum of dense squares)``
    over every call and prompt recorded, so a bin's long steps and short ones weigh by their size.
    """

    wants_lse = False  # the error compares outputs only: the dense pass stays the model's own SDPA

    def __init__(self, profile: Profile, backend: str = "auto") -> None:
        m = profile.meta
        self.profile = profile
        self.backend = backend
        self.squared_error = np.zeros((m.bins, m.layers, m.heads, len(CANDIDATES)))
        self.squared_norm = np.zeros((m.bins, m.layers, m.heads))
        self._bin = -1
        self._entries: dict[int, torch.Tensor] = {}  # layer -> entry levels [heads, nq, nk] of the current bin

    def _entry_levels(self, bin_index: int, layer: int, device: torch.device) -> torch.Tensor:
        """One (bin, layer)'s entry levels, decompressed once per bin (steps run in bin order)."""
        if bin_index != self._bin:
            self._bin, self._entries = bin_index, {}
        if layer not in self._entries:
            self._entries[layer] = torch.from_numpy(self.profile.entry_levels(bin_index, layer)).to(device)
        return self._entries[layer]

    def add(self, step: int, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
            out: torch.Tensor, lse: torch.Tensor | None = None) -> None:
        from calibstudio.kernels.attention import sparse_attention
        from calibstudio.kernels.layout import BlockLayout

        m = self.profile.meta
        b = m.bin_of_step(step)
        entry = self._entry_levels(b, layer, q.device)
        dense = out.float()
        self.squared_norm[b, layer] += dense.square().sum(dim=(0, 1, 3)).cpu().numpy()
        before = None
        for i, level in enumerate(_LEVELS):
            mask = entry <= level
            if bool(mask.all()):
                break  # this rung and every higher one keep every block: no error, nothing to compute
            if before is None or not torch.equal(mask, before):  # an equal mask has the rung below's error
                layout = BlockLayout.from_mask(mask, m.block_size[0], m.block_size[1], q_len=m.tokens, k_len=m.tokens)
                sparse = sparse_attention(q, k, v, layout, backend=self.backend).float()
                error = (sparse - dense).square().sum(dim=(0, 1, 3)).cpu().numpy()
            self.squared_error[b, layer, :, i] += error
            before = mask

    def relative_error(self) -> np.ndarray:
        """``[bins, layers, heads, len(CANDIDATES)]`` relative output error at each candidate."""
        return np.sqrt(self.squared_error / np.maximum(self.squared_norm, 1e-30)[..., None])


def floors_for(relative_error: np.ndarray, bound: float) -> np.ndarray:
    """Per (bin, layer, head) floor level: the lowest candidate from which every higher one is within
    ``bound`` (level 0, i.e. no floor, when all are; ``NEVER``, dense, when the top one is not)."""
    levels = np.array([*_LEVELS, NEVER])
    within = np.concatenate([relative_error <= bound, np.ones((*relative_error.shape[:-1], 1), bool)], axis=-1)
    above_all = np.flip(np.cumprod(np.flip(within, -1), -1), -1).astype(bool)  # this rung and all above are within
    return levels[above_all.argmax(axis=-1)].astype(np.uint8)
