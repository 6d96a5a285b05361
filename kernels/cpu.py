"""CPU block-sparse attention that really skips work, so the demo shows a true speedup on a laptop.

Query blocks of all heads are grouped by how many key blocks they keep; each group gathers its kept
K/V blocks into one contiguous batch and runs one batched SDPA call on it (two batched matmuls with a
stable softmax in between where the row LSE is asked for). Grouping across heads (not head by head)
gives fewer, larger calls: at density 0.25, 2.75x over dense SDPA at the demo model's shape (4096
tokens, 4 heads) and 2.4-2.9x at the other demo-like shapes (2 cores; docs/benchmarks/kernels-cpu.json),
where the per-head loop reached 2.2x at best.
Work and memory are proportional to the kept blocks, not to S^2.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .layout import BlockLayout

__all__ = ["cpu_sparse_attention"]

# Keys gathered per chunk: few large SDPA calls spread over the cores better than many small ones (the
# chunk of 4096 keys once meant to stay in cache was 4-22% slower on 2 cores with freed memory kept, as
# jobs run); the bound keeps each gather buffer at 16 MB for D=64 (past it: no faster at the demo shapes).
_CHUNK_KEYS = 65536
# Query x key scores per call for rows that keep every key block (bounds the LSE path's score matrix).
_SCORES = 1 << 24


def _blocks(x: torch.Tensor, n: int, block: int, dtype: torch.dtype) -> torch.Tensor:
    """(B, S, H, D) -> (B, H*n, block, D), zero-padded to whole blocks: one copy, after which gathering a
    (head, block) is one contiguous row copy, for every head at once. A partial last block is zeroed in
    place, so padding costs no second copy (S=3120)."""
    B, S, H, D = x.shape
    blocks = torch.empty(B, H, n * block, D, dtype=dtype, device=x.device)
    if S == n * block:
        blocks.copy_(x.transpose(1, 2))
    else:
        blocks[:, :, :S].copy_(x.transpose(1, 2))
        blocks[:, :, S:].zero_()
    return blocks.view(B, H * n, block, D)


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float,
            want_lse: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Batched attention ``[r, m, D] x [r, n, D]`` (k, v may be strided views): one SDPA call, or where the
    row LSE is asked for, two batched matmuls around a stable softmax."""
    if not want_lse:
        o = F.scaled_dot_product_attention(q.unsqueeze(1), k.unsqueeze(1), v.unsqueeze(1), scale=scale)
        return o.squeeze(1), None
    sc = torch.bmm(q, k.transpose(1, 2)).mul_(scale)
    return torch.bmm(torch.softmax(sc, dim=-1), v), torch.logsumexp(sc, dim=-1).float()


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
    qb, kb, vb = (_blocks(x, n, b, cdt) for x, n, b in ((q, nq, bq), (k, nk, bk), (v, nk, bk)))
    tail = nk * bk - Sk
    out = torch.empty(B, H * nq, bq, D, dtype=cdt, device=q.device)
    lse = torch.empty(B, H * nq, bq, dtype=torch.float32, device=q.device) if return_lse else None

    # Row h*nq + i of the flattened layout keeps key rows h*nk + kv_index[h, i, :count] of kb/vb.
    # Kept blocks ascend, so a row that keeps the zero-padded last key block gathers its padding at the
    # end of its keys: it attends to a run shortened by the padding, no mask needed (SDPA with a mask is
    # slower). Rows are grouped by (count, shortened) so each group's runs have one length.
    counts = layout.kv_count.reshape(-1).long()
    index = layout.kv_index.reshape(H * nq, -1).long()
    group = (counts * 2 + (index[:, -1] == nk - 1) if tail else counts * 2).cpu()
    head_base = torch.arange(H, device=q.device).repeat_interleave(nq)[:, None] * nk
    kv_rows = index + head_base
    order = torch.argsort(group, stable=True)
    uniq, sizes = torch.unique_consecutive(group[order], return_counts=True)
    order = order.to(q.device)
    # Gather buffers reused across the chunks of a call.
    cap = max(_CHUNK_KEYS, layout.max_k * bk)
    kbuf = torch.empty(cap * D, dtype=cdt, device=q.device)
    vbuf = torch.empty(cap * D, dtype=cdt, device=q.device)
    start = 0
    for g, n in zip(uniq.tolist(), sizes.tolist(), strict=True):
        rows_all = order[start : start + n]
        start += n
        c = g // 2
        keys_len = c * bk - (tail if g % 2 else 0)
        if c == nk:  # rows that keep every key block read their head's K/V in place: no gather
            step = max(1, _SCORES // (bq * keys_len))
            for h in (rows_all // nq).unique().tolist():
                head_rows = rows_all[rows_all // nq == h]
                keys = slice(h * nk, (h + 1) * nk)
                for r0 in range(0, head_rows.numel(), step):
                    rows = head_rows[r0 : r0 + step]
                    for b in range(B):
                        qg = qb[b].index_select(0, rows)
                        kh, vh = (x[b, keys].view(1, -1, D)[:, :keys_len] for x in (kb, vb))
                        o, row_lse = _attend(qg.view(1, -1, D), kh, vh, scale, lse is not None)
                        out[b].index_copy_(0, rows, o.view_as(qg))
                        if lse is not None:
                            lse[b].index_copy_(0, rows, row_lse.view(-1, bq))
            continue
        step = max(1, cap // (c * bk))
        for r0 in range(0, n, step):
            rows = rows_all[r0 : r0 + step]
            r = rows.numel()
            kidx = kv_rows[rows, :c].reshape(-1)  # [r*c]
            kg = kbuf[: r * c * bk * D].view(r * c, bk, D)
            vg = vbuf[: r * c * bk * D].view(r * c, bk, D)
            runs = (r, keys_len, D), (c * bk * D, D, 1)  # each row's gathered keys, shortened by any padding
            for b in range(B):
                torch.index_select(kb[b], 0, kidx, out=kg)
                torch.index_select(vb[b], 0, kidx, out=vg)
                qg = qb[b].index_select(0, rows)  # [r, bq, D]
                o, row_lse = _attend(qg, kbuf.as_strided(*runs), vbuf.as_strided(*runs), scale, lse is not None)
                out[b].index_copy_(0, rows, o)
                if lse is not None:
                    lse[b].index_copy_(0, rows, row_lse)
    o = out.view(B, H, nq * bq, D)[:, :, :Sq].transpose(1, 2).to(q.dtype)
    if lse is None:
        return o
    return o, lse.view(B, H, nq * bq)[:, :, :Sq].contiguous()
