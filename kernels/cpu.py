"""CPU block-sparse attention that really skips work, so the demo shows a true speedup on a laptop.

Query blocks (over all heads) are grouped by how many key blocks they keep; each group gathers its kept
K/V blocks into one contiguous batch and runs two batched matmuls with a stable softmax in between.
Work and memory are proportional to the kept blocks, not to S^2.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .layout import BlockLayout

__all__ = ["cpu_sparse_attention"]

# Keys gathered per chunk: keeps the gathered K/V of one chunk in cache.
_CHUNK_KEYS = 4096


def _pad(x: torch.Tensor, length: int) -> torch.Tensor:
    """Zero-pad (B, S, H, D) along S to ``length`` (a copy only when S is not a whole number of blocks)."""
    if x.shape[1] == length:
        return x  # any strides: the gathers below read strided blocks directly
    return F.pad(x, (0, 0, 0, 0, 0, length - x.shape[1])).contiguous()


def cpu_sparse_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    layout: BlockLayout,
    scale: float | None = None,
    return_lse: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Block-sparse attention on (B, S, H, D) tensors on any device through torch ops (meant for the CPU).

    Returns the output in q's dtype (and optionally the row LSE ``[B, H, S]`` in float32, natural log).
    Half-precision inputs are computed in float32.
    """
    B, Sq, H, D = q.shape
    Sk = k.shape[1]
    if (Sq, Sk) != (layout.q_len, layout.k_len) or H != layout.heads:
        raise ValueError(f"inputs (Sq={Sq}, Sk={Sk}, H={H}) do not match {layout}")
    layout = layout.to(q.device)
    bq, bk = layout.block_q, layout.block_k
    nq, nk = layout.num_q_blocks, layout.num_k_blocks
    scale = 1.0 / math.sqrt(D) if scale is None else scale
    cdt = torch.float32 if q.dtype in (torch.float16, torch.bfloat16) else q.dtype

    # Per batch element: [H*n, block*D] so that gathering a block is one contiguous row copy.
    # Pad the token axis to whole blocks only when needed; otherwise gather straight from the strided
    # (B, S, H, D) inputs (no permute copies: memory bandwidth is the scarce thing on a laptop CPU).
    q5 = _pad(q.to(cdt), nq * bq).view(B, nq, bq, H, D)
    k5 = _pad(k.to(cdt), nk * bk).view(B, nk, bk, H, D)
    v5 = _pad(v.to(cdt), nk * bk).view(B, nk, bk, H, D)
    tail = nk * bk - Sk
    bias = None
    if tail:
        bias = torch.zeros(nk, bk, dtype=cdt, device=q.device)
        bias[-1, bk - tail :] = float("-inf")
    out = torch.empty(B, nq * bq, H, D, dtype=cdt, device=q.device)
    o5 = out.view(B, nq, bq, H, D)
    lse = torch.empty(B, H, nq, bq, dtype=torch.float32, device=q.device) if return_lse else None

    counts = layout.kv_count.cpu()
    kv_index = layout.kv_index
    # Reused gather buffers (sized to stay in cache): fresh large allocations page-fault.
    cap = max(_CHUNK_KEYS, layout.max_k * bk)
    kbuf = torch.empty(cap * D, dtype=cdt, device=q.device)
    vbuf = torch.empty(cap * D, dtype=cdt, device=q.device)
    for h in range(H):
        order = torch.argsort(counts[h], stable=True)
        uniq, sizes = torch.unique_consecutive(counts[h][order], return_counts=True)
        order = order.to(q.device)
        start = 0
        for c, n in zip(uniq.tolist(), sizes.tolist(), strict=True):
            rows_all = order[start : start + n]
            start += n
            step = max(1, cap // (c * bk))
            for r0 in range(0, n, step):
                rows = rows_all[r0 : r0 + step]
                r = rows.numel()
                kidx = kv_index[h, rows, :c].reshape(-1)  # [r*c]
                kg = kbuf[: r * c * bk * D].view(r * c, bk, D)
                vg = vbuf[: r * c * bk * D].view(r * c, bk, D)
                mask = None if bias is None else bias[kidx].view(r, 1, c * bk)
                for b in range(B):
                    torch.index_select(k5[b, :, :, h], 0, kidx, out=kg)
                    torch.index_select(v5[b, :, :, h], 0, kidx, out=vg)
                    qg = q5[b, :, :, h].index_select(0, rows)  # [r, bq, D]
                    k3, v3 = kg.view(r, c * bk, D), vg.view(r, c * bk, D)
                    if lse is None:
                        o = F.scaled_dot_product_attention(
                            qg.unsqueeze(1), k3.unsqueeze(1), v3.unsqueeze(1),
                            attn_mask=None if mask is None else mask.unsqueeze(1), scale=scale,
                        ).squeeze(1)
                    else:
                        if mask is None:
                            sc = torch.bmm(qg, k3.transpose(1, 2)).mul_(scale)
                        else:
                            sc = torch.baddbmm(mask, qg, k3.transpose(1, 2), alpha=scale)
                        lse[b, h].index_copy_(0, rows, torch.logsumexp(sc, dim=-1).float())
                        o = torch.bmm(torch.softmax(sc, dim=-1), v3)
                    o5[b, :, :, h].index_copy_(0, rows, o)
    o = out[:, :Sq].to(q.dtype)
    if lse is None:
        return o
    return o, lse.view(B, H, nq * bq)[:, :, :Sq].contiguous()
