"""Block layouts: the compiled form of one attention call's block mask, plus each backend's view of it.

A layout is built once per (step bin, layer) and reused for every call, so the per-backend tensors
(flash-attn-4 ``BlockSparseTensorsTorch``, FlexAttention ``BlockMask``, our Triton kernel's schedule)
are built lazily and cached on the layout.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["BlockLayout", "EmptyRowError"]


class EmptyRowError(ValueError):
    """A query block keeps no key block: its softmax would be undefined."""


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True, repr=False, eq=False)
class BlockLayout:
    """Sorted per-(head, query block) lists of kept key blocks.

    ``kv_count[h, i]`` key blocks are kept for query block ``i`` of head ``h``; their indices are
    ``kv_index[h, i, :kv_count[h, i]]`` in ascending order. Entries past the count repeat the last
    kept index, so a kernel that prefetches one step ahead always reads a valid block.
    """

    kv_count: torch.Tensor  # [H, nq] int32
    kv_index: torch.Tensor  # [H, nq, max_k] int32, ascending, padded with the last valid index
    block_q: int
    block_k: int
    q_len: int
    k_len: int
    kept: int = 0  # total number of kept (h, qb, kb) blocks
    _cache: dict[str, Any] = field(default_factory=dict, compare=False)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_mask(
        cls,
        mask: torch.Tensor,
        block_q: int = 128,
        block_k: int = 128,
        q_len: int | None = None,
        k_len: int | None = None,
    ) -> BlockLayout:
        """Build from a boolean block mask ``[H, nq, nk]`` on any device (vectorised, one host sync).

        ``q_len``/``k_len`` default to ``nq * block_q`` / ``nk * block_k``; they must fall inside the
        last block. Raises :class:`EmptyRowError` naming the first head/row that keeps no key block.
        """
        if mask.dim() != 3:
            raise ValueError(f"block mask must be [H, nq, nk], got shape {tuple(mask.shape)}")
        if mask.dtype != torch.bool:
            mask = mask != 0
        H, nq, nk = mask.shape
        q_len = nq * block_q if q_len is None else int(q_len)
        k_len = nk * block_k if k_len is None else int(k_len)
        if _cdiv(q_len, block_q) != nq:
            raise ValueError(f"q_len={q_len} needs {_cdiv(q_len, block_q)} query blocks of {block_q}, mask has {nq}")
        if _cdiv(k_len, block_k) != nk:
            raise ValueError(f"k_len={k_len} needs {_cdiv(k_len, block_k)} key blocks of {block_k}, mask has {nk}")
        mask = mask.contiguous()
        pos = torch.cumsum(mask, dim=-1, dtype=torch.int32)  # [H, nq, nk]: 1-based rank of each kept block
        count = pos[..., -1]
        stats = torch.stack([count.min(), count.max(), count.sum()]).tolist()  # the one host sync
        cmin, cmax, total = (int(x) for x in stats)
        if cmin == 0:
            h, i = (int(x) for x in torch.nonzero(count == 0)[0].tolist())
            raise EmptyRowError(
                f"head {h}, query block {i} keeps no key block; every query block must keep at least one"
            )
        # Scatter each kept block's column to its rank; dropped blocks go to a trash column nk.
        dest = torch.where(mask, pos - 1, torch.full_like(pos, nk))
        cols = torch.arange(nk, device=mask.device, dtype=torch.int32).expand(H, nq, nk)
        full = torch.empty(H, nq, nk + 1, device=mask.device, dtype=torch.int32)
        full.scatter_(-1, dest.long(), cols)
        index = full[..., :cmax]
        # Pad past the count with the last kept index.
        j = torch.arange(cmax, device=mask.device, dtype=torch.int32)
        take = torch.minimum(j.view(1, 1, -1), (count - 1).unsqueeze(-1))
        index = torch.gather(index, -1, take.long()).contiguous()
        return cls(count.contiguous(), index, int(block_q), int(block_k), q_len, k_len, total)

    @classmethod
    def dense(
        cls,
        heads: int,
        q_len: int,
        k_len: int | None = None,
        block_q: int = 128,
        block_k: int = 128,
        device: Any = "cpu",
    ) -> BlockLayout:
        """All blocks kept (density 1)."""
        k_len = q_len if k_len is None else k_len
        m = torch.ones(heads, _cdiv(q_len, block_q), _cdiv(k_len, block_k), dtype=torch.bool, device=device)
        return cls.from_mask(m, block_q, block_k, q_len, k_len)

    def __post_init__(self) -> None:
        c, ix = self.kv_count, self.kv_index
        if c.dim() != 2 or ix.dim() != 3 or ix.shape[:2] != c.shape:
            raise ValueError(
                f"kv_count [H, nq] and kv_index [H, nq, max_k] disagree: {tuple(c.shape)} vs {tuple(ix.shape)}"
            )
        if c.dtype != torch.int32 or ix.dtype != torch.int32:
            raise ValueError("kv_count and kv_index must be int32")
        if c.shape[1] != _cdiv(self.q_len, self.block_q):
            raise ValueError(f"{c.shape[1]} query blocks do not match q_len={self.q_len}, block_q={self.block_q}")

    # ------------------------------------------------------------------ properties
    @property
    def heads(self) -> int:
        return int(self.kv_count.shape[0])

    @property
    def num_q_blocks(self) -> int:
        return int(self.kv_count.shape[1])

    @property
    def num_k_blocks(self) -> int:
        return _cdiv(self.k_len, self.block_k)

    @property
    def max_k(self) -> int:
        return int(self.kv_index.shape[2])

    @property
    def device(self) -> torch.device:
        return self.kv_count.device

    @property
    def density(self) -> float:
        """Fraction of (head, qb, kb) blocks kept."""
        return self.kept / float(self.heads * self.num_q_blocks * self.num_k_blocks)

    def __repr__(self) -> str:
        return (
            f"BlockLayout(heads={self.heads}, q_len={self.q_len}, k_len={self.k_len}, "
            f"blocks={self.block_q}x{self.block_k}, grid={self.num_q_blocks}x{self.num_k_blocks}, "
            f"max_k={self.max_k}, density={self.density:.4f}, device={self.device})"
        )

    # ------------------------------------------------------------------ conversions (cached)
    def to(self, device: Any) -> BlockLayout:
        """The same layout on another device (cached per device)."""
        device = torch.device(device)
        if device == self.device:
            return self
        key = f"to:{device}"
        if key not in self._cache:
            self._cache[key] = BlockLayout(
                self.kv_count.to(device), self.kv_index.to(device), self.block_q, self.block_k,
                self.q_len, self.k_len, self.kept,
            )
        return self._cache[key]

    def to_mask(self) -> torch.Tensor:
        """Boolean block mask ``[H, nq, nk]``."""
        H, nq = self.kv_count.shape
        m = torch.zeros(H, nq, self.num_k_blocks, dtype=torch.bool, device=self.device)
        m.scatter_(-1, self.kv_index.long(), True)
        return m

    def token_mask(self) -> torch.Tensor:
        """Boolean token mask ``[H, q_len, k_len]`` (for the reference; memory grows with S^2)."""
        m = self.to_mask()
        m = m.repeat_interleave(self.block_q, dim=1)[:, : self.q_len]
        return m.repeat_interleave(self.block_k, dim=2)[:, :, : self.k_len]

    def row_order(self) -> torch.Tensor:
        """Flat (head * nq + qb) row ids, head by head, heaviest rows of a head first: the Triton kernel's
        launch order.

        Head-major so that the programs in flight share one head's K/V in L2 (a global heaviest-first
        order mixes every head and streams K/V from HBM: 10-25% slower on an H100 at densities 1/16-1/4);
        within a head, the longest rows first let the short ones fill the tail (LPT scheduling).
        """
        if "row_order" not in self._cache:
            heads, nq = self.kv_count.shape
            within = torch.argsort(self.kv_count, dim=1, descending=True, stable=True)
            base = torch.arange(heads, device=within.device)[:, None] * nq
            self._cache["row_order"] = (within + base).reshape(-1).to(torch.int32)
        return self._cache["row_order"]

    def triton_tensors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(kv_count, kv_index, row_order)`` for :mod:`triton_fwd`."""
        return self.kv_count, self.kv_index, self.row_order()

    def to_fa4(self) -> Any:
        """flash-attn-4 ``BlockSparseTensorsTorch``: kept blocks passed as *full* blocks (no mask_mod work)."""
        if "fa4" not in self._cache:
            from flash_attn.cute.block_sparsity import BlockSparseTensorsTorch

            H, nq = self.kv_count.shape
            zc = torch.zeros(1, H, nq, dtype=torch.int32, device=self.device)
            zi = torch.zeros(1, H, nq, 1, dtype=torch.int32, device=self.device)
            self._cache["fa4"] = BlockSparseTensorsTorch(
                mask_block_cnt=zc,
                mask_block_idx=zi,
                full_block_cnt=self.kv_count.unsqueeze(0),
                full_block_idx=self.kv_index.unsqueeze(0),
                block_size=(self.block_q, self.block_k),
            )
        return self._cache["fa4"]

    def to_flex(self) -> Any:
        """FlexAttention ``BlockMask`` (forward only: no transposed q-block tables are built)."""
        if "flex" not in self._cache:
            from torch.nn.attention.flex_attention import BlockMask

            H, nq = self.kv_count.shape
            nk = self.num_k_blocks
            # Flex expects kv_indices as wide as the key-block grid.
            idx = torch.zeros(1, H, nq, nk, dtype=torch.int32, device=self.device)
            idx[..., : self.max_k] = self.kv_index
            zc = torch.zeros(1, H, nq, dtype=torch.int32, device=self.device)
            self._cache["flex"] = BlockMask.from_kv_blocks(
                zc,
                torch.zeros_like(idx),
                self.kv_count.unsqueeze(0),
                idx,
                BLOCK_SIZE=(self.block_q, self.block_k),
                seq_lengths=(self.q_len, self.k_len),
                compute_q_blocks=False,
            )
        return self._cache["flex"]

    def repeated_rows(self) -> float:
        """Fraction of query blocks whose kv set equals the previous query block's (the paper's repetition)."""
        if self.num_q_blocks < 2:
            return 0.0
        same = (self.kv_count[:, 1:] == self.kv_count[:, :-1]) & (self.kv_index[:, 1:] == self.kv_index[:, :-1]).all(-1)
        return float(same.float().mean())
