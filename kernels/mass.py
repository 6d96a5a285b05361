"""Block attention mass for calibration: per (head, qb, kb) the sum of dense softmax probabilities.

Given the row log-sum-exp of the dense attention (from our forward with ``return_lse``, or a first pass),
``p = exp(q.k * scale - lse)`` needs no running max and no rescaling, so each (query block, key block)
tile is one QK^T matmul, one exp and one reduction; nothing of size S^2 touches memory. The result is
summed over the batch and over the queries of each query block, so a row of blocks sums to the number
of valid queries in it (add calls over prompts; divide by the row sum to normalise).
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from .triton_fwd import exp2_ftz

__all__ = ["block_mass", "dense_attention_lse", "triton_block_mass", "torch_block_mass"]

_LOG2E = 1.4426950408889634


@triton.jit
def _exp2_f16x2(x):
    """Two exp2 per MUFU op via packed half precision (probabilities need ~1e-3 relative, not fp32)."""
    return tl.inline_asm_elementwise(
        "ex2.approx.f16x2 $0, $1;", "=r,r", [x.to(tl.float16)], dtype=tl.float16, is_pure=True, pack=2
    ).to(tl.float32)


@triton.jit
def _mass_kernel(
    Q, K, LSE, OUT,
    qk_scale,
    sqb, sqs, sqh,
    skb, sks, skh,
    slb, slh,
    nq, nk, q_len, k_len, heads,
    HEAD_DIM: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_M: tl.constexpr,
    CHUNK: tl.constexpr, KEY_BLOCKS: tl.constexpr, EVEN_K: tl.constexpr, FAST_EXP: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """One program: BLOCK_M query rows against KEY_BLOCKS consecutive key blocks (its key range).

    Query tiles vary fastest in the grid, so the programs in flight read the same key range and it stays in
    L2 (a head's whole K is 19 MB at 720p: programs that each walk all of it drift apart and stream it from
    HBM; 128 -> 119 ms on an H100).
    """
    SPLIT_M: tl.constexpr = BLOCK_Q // BLOCK_M
    pid = tl.program_id(0)
    qblk = pid // SPLIT_M
    k0 = tl.program_id(1) * KEY_BLOCKS
    bh = tl.program_id(2)
    h = (bh % heads).to(tl.int64)
    b = (bh // heads).to(tl.int64)
    offs_m = qblk * BLOCK_Q + (pid % SPLIT_M) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    offs_n = tl.arange(0, BLOCK_K)
    cols = tl.arange(0, CHUNK)
    row_ok = offs_m < q_len
    q = tl.load(Q + b * sqb + h * sqh + offs_m[:, None].to(tl.int64) * sqs + offs_d[None, :],
                mask=row_ok[:, None], other=0.0)
    # Rows past q_len get lse=+inf, so their probabilities are exactly 0.
    lse2 = tl.load(LSE + b * slb + h * slh + offs_m, mask=row_ok, other=float("inf")) * 1.4426950408889634
    k_ptrs = K + b * skb + h * skh + offs_d[:, None] + (k0 * BLOCK_K + offs_n[None, :]).to(tl.int64) * sks
    out_row = OUT + (h * nq + qblk) * nk
    k1 = tl.minimum(k0 + KEY_BLOCKS, nk)
    # Row sums of CHUNK consecutive key blocks stay in registers (one-hot columns); the reduction across
    # warps happens once per CHUNK blocks, so warps are not lock-stepped on every tile.
    part = tl.zeros([BLOCK_M, CHUNK], dtype=tl.float32)
    n_main = k1 if EVEN_K else tl.minimum(k1, nk - 1)  # the partial last key block is peeled off
    for kb in range(k0, n_main):
        rs = _tile_rowsum(q, k_ptrs, lse2, qk_scale, kb * BLOCK_K, k_len,
                          BLOCK_K, False, FAST_EXP, PRECISION)
        j = (kb - k0) % CHUNK
        part += tl.where(cols[None, :] == j, rs[:, None], 0.0)
        if j == CHUNK - 1:
            tl.atomic_add(out_row + (kb - (CHUNK - 1)) + cols, tl.sum(part, 0))
            part = tl.zeros([BLOCK_M, CHUNK], dtype=tl.float32)
        k_ptrs += BLOCK_K * sks
    if not EVEN_K:
        if k1 == nk:
            kb = nk - 1
            rs = _tile_rowsum(q, k_ptrs, lse2, qk_scale, kb * BLOCK_K, k_len,
                              BLOCK_K, True, FAST_EXP, PRECISION)
            part += tl.where(cols[None, :] == (kb - k0) % CHUNK, rs[:, None], 0.0)
    base = k0 + ((n_main - k0) // CHUNK) * CHUNK
    pending = k1 - base
    if pending > 0:
        tl.atomic_add(out_row + base + cols, tl.sum(part, 0), mask=cols < pending)


@triton.jit
def _tile_rowsum(q, k_ptrs, lse2, qk_scale, start, k_len, BLOCK_K: tl.constexpr, MASK_K: tl.constexpr,
                 FAST_EXP: tl.constexpr, PRECISION: tl.constexpr):
    """Per-row sums of exp2(q.k * scale - lse) over one key tile."""
    offs_n = start + tl.arange(0, BLOCK_K)
    if MASK_K:
        k = tl.load(k_ptrs, mask=offs_n[None, :] < k_len, other=0.0)
    else:
        k = tl.load(k_ptrs)
    s = tl.dot(q, k, input_precision=PRECISION) * qk_scale - lse2[:, None]
    if MASK_K:
        s = tl.where(offs_n[None, :] < k_len, s, float("-inf"))
    if FAST_EXP == 1:
        p = _exp2_f16x2(s)
    elif FAST_EXP == 2:
        p = exp2_ftz(s, True)
    else:
        p = tl.math.exp2(s)
    return tl.sum(p, 1)


def triton_block_mass(
    q: torch.Tensor,
    k: torch.Tensor,
    lse: torch.Tensor,
    block_q: int = 128,
    block_k: int = 128,
    scale: float | None = None,
    out: torch.Tensor | None = None,
    fast_exp: bool | int | None = None,
    block_m: int | None = None,
    num_warps: int | None = None,
    num_stages: int = 2,
    chunk: int = 16,
    key_blocks: int = 128,
) -> torch.Tensor:
    """Block mass ``[H, nq, nk]`` (float32, added into ``out``) from (B, S, H, D) q, k and LSE ``[B, H, Sq]``.

    ``key_blocks``: key blocks per program (rounded up to a multiple of ``chunk``); a program's key range
    is what the programs in flight share in L2.

    ``fast_exp``: 1 uses packed f16 exp2 (~1e-3 relative per probability, twice the exp rate), 2 the
    flush-to-zero f32 exp2 (exact to fp32 rounding); 0/None is ``tl.math.exp2``.
    """
    B, Sq, H, D = q.shape
    Sk = k.shape[1]
    nq, nk = -(-Sq // block_q), -(-Sk // block_k)
    if out is None:
        out = torch.zeros(H, nq, nk, device=q.device, dtype=torch.float32)
    if out.shape != (H, nq, nk) or out.dtype != torch.float32 or not out.is_contiguous():
        raise ValueError(f"out must be contiguous float32 [{H}, {nq}, {nk}]")
    q, k = (x if x.stride(-1) == 1 else x.contiguous() for x in (q, k))
    lse = lse.float()
    fast_exp = int(fast_exp or 0) if q.is_cuda else 0  # 1: packed f16 exp2, 2: ftz f32 exp2
    block_m = min(block_q, block_m or (128 if q.is_cuda else 32))
    num_warps = num_warps or (4 if block_m <= 64 else 8)
    scale = 1.0 / math.sqrt(D) if scale is None else scale
    key_blocks = -(-min(key_blocks, nk) // chunk) * chunk
    _mass_kernel[(nq * (block_q // block_m), -(-nk // key_blocks), B * H)](
        q, k, lse, out,
        scale * _LOG2E,
        q.stride(0), q.stride(1), q.stride(2),
        k.stride(0), k.stride(1), k.stride(2),
        lse.stride(0), lse.stride(1),
        nq, nk, Sq, Sk, H,
        HEAD_DIM=D, BLOCK_Q=block_q, BLOCK_K=block_k, BLOCK_M=block_m, CHUNK=chunk, KEY_BLOCKS=key_blocks,
        EVEN_K=Sk % block_k == 0, FAST_EXP=fast_exp,
        PRECISION="ieee" if q.dtype == torch.float32 else "tf32",
        num_warps=num_warps, num_stages=num_stages,
    )
    return out


def _block_sums(x: torch.Tensor, block: int, blocks: int) -> torch.Tensor:
    """Sums of ``x``'s last dimension in runs of ``block`` (the last run may be short) -> ``[..., blocks]``."""
    full = x.shape[-1] // block
    sums = x[..., : full * block].unflatten(-1, (full, block)).sum(-1)
    if full < blocks:
        sums = torch.cat([sums, x[..., full * block :].sum(-1, keepdim=True)], dim=-1)
    return sums


def torch_block_mass(
    q: torch.Tensor,
    k: torch.Tensor,
    lse: torch.Tensor | None = None,
    block_q: int = 128,
    block_k: int = 128,
    scale: float | None = None,
    out: torch.Tensor | None = None,
    chunk: int = 2,
) -> torch.Tensor:
    """Torch implementation (CPU path and oracle): chunks of ``chunk`` query blocks per head bound memory.

    Without ``lse`` each chunk computes its own row LSE (exact, one extra reduction). The probabilities are
    made in place in the chunk's score buffer and summed without padding: on a 2-core CPU the element-wise
    passes over the ``rows x S`` scores, not the matmul, are most of the cost (1.4-1.9x faster than softmax + pad).
    """
    B, Sq, H, D = q.shape
    Sk = k.shape[1]
    nq, nk = -(-Sq // block_q), -(-Sk // block_k)
    scale = 1.0 / math.sqrt(D) if scale is None else scale
    if out is None:
        out = torch.zeros(H, nq, nk, device=q.device, dtype=torch.float32)
    cdt = torch.float32 if q.dtype != torch.float64 else q.dtype
    for b in range(B):
        for h in range(H):
            kt = k[b, :, h].to(cdt).T.contiguous()  # [D, Sk]
            qh = q[b, :, h].to(cdt) * scale
            for i0 in range(0, nq, chunk):
                i1 = min(nq, i0 + chunk)
                r0, r1 = i0 * block_q, min(Sq, i1 * block_q)
                if lse is None:
                    p = qh[r0:r1] @ kt  # [rows, Sk]
                    p.sub_(torch.logsumexp(p, dim=-1, keepdim=True))
                else:
                    p = torch.addmm(-lse[b, h, r0:r1, None].to(cdt), qh[r0:r1], kt)
                keys = _block_sums(p.exp_(), block_k, nk)  # [rows, nk]
                out[h, i0:i1] += _block_sums(keys.T, block_q, i1 - i0).T.float()
    return out


def dense_attention_lse(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                        scale: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Dense attention on (B, S, H, D) and its row log-sum-exp ``[B, H, S]`` from one pass: what a
    calibration call needs, so the mass costs no second attention pass for the LSE.

    CUDA: our Triton forward over an all-dense layout. CPU: the flash kernel ``F.scaled_dot_product_attention``
    itself dispatches to there, which also returns the LSE (so the output is the same as plain SDPA).
    """
    if q.is_cuda:
        from .layout import BlockLayout
        from .triton_fwd import triton_sparse_attention

        layout = BlockLayout.dense(q.shape[2], q.shape[1], k.shape[1], device=q.device)
        return triton_sparse_attention(q, k, v, layout, scale=scale, return_lse=True)
    out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), scale=scale)
    return out.transpose(1, 2), lse


def block_mass(
    q: torch.Tensor,
    k: torch.Tensor,
    lse: torch.Tensor | None = None,
    block_q: int = 128,
    block_k: int = 128,
    scale: float | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Block attention mass ``[H, nq, nk]`` on any device: Triton on CUDA, chunked torch on CPU.

    On CUDA without ``lse`` a first pass of our dense Triton forward provides it.
    """
    if q.is_cuda:
        if lse is None:
            _, lse = dense_attention_lse(q, k, k, scale)
        return triton_block_mass(q, k, lse, block_q, block_k, scale, out)
    return torch_block_mass(q, k, lse, block_q, block_k, scale, out)
