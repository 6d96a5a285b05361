"""Our Triton block-sparse attention forward (the backend for non-Hopper CUDA GPUs, and the fallback).

One program owns one (batch, head, query tile) and walks only the kept key blocks of its query block
(``kv_index``), with an online softmax in base 2 and fp32 accumulation. Inputs are read in place from
strided (B, S, H, D) tensors; S need not be a multiple of the block size (the key tail is masked only
on the last kept block, the query tail only on load/store). Programs are launched head by head, heaviest
row of a head first (``BlockLayout.row_order``): programs in flight share one head's K/V in L2, and short
rows fill the end of the grid.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from .layout import BlockLayout

__all__ = ["FwdConfig", "default_config", "triton_sparse_attention"]

_LOG2E = 1.4426950408889634
_INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"


@dataclass(frozen=True)
class FwdConfig:
    """Explicit tuning knobs (no autotuner: compiled variants stay fixed for CUDA graphs)."""

    block_m: int = 128
    block_n: int = 64
    num_warps: int = 4
    num_stages: int = 2
    tma: bool = False  # Hopper+: K/V (and Q) tiles through the bulk tensor copy engine (host descriptors)
    ws: bool = False  # let Triton warp-specialise the kv loop (producer/consumer warps)
    ftz: bool = False  # exp2 as one ex2.approx.ftz instruction (CUDA only)

    def __str__(self) -> str:
        base = f"m{self.block_m}n{self.block_n}w{self.num_warps}s{self.num_stages}"
        return base + "-tma" * self.tma + "-ws" * self.ws + "-ftz" * self.ftz


def default_config(device: torch.device, head_dim: int, block_q: int, block_k: int) -> FwdConfig:
    """Per-architecture defaults; ``CALIBSTUDIO_TRITON_FWD=m128n64w8s3`` overrides (for tuning runs)."""
    env = os.environ.get("CALIBSTUDIO_TRITON_FWD")
    if env:
        import re

        m = re.fullmatch(r"m(\d+)n(\d+)w(\d+)s(\d+)(-tma)?(-ws)?(-ftz)?", env)
        if m:
            g = m.groups()
            return FwdConfig(*(int(x) for x in g[:4]), tma=bool(g[4]), ws=bool(g[5]), ftz=bool(g[6]))
    if device.type != "cuda":
        cfg = FwdConfig(block_m=min(64, block_q), block_n=min(64, block_k), num_warps=4, num_stages=1)
    else:
        major, _ = torch.cuda.get_device_capability(device)
        if major >= 9:  # Hopper / Blackwell: 128x128 tiles, 2 warpgroups, 3-deep TMA pipeline (H100 sweep)
            cfg = FwdConfig(128, 128, 8, 3, tma=True)
        elif major == 8:  # Ampere / Ada: ~100-164 KB shared memory
            cfg = FwdConfig(128, 64, 4 if head_dim <= 64 else 8, 3 if head_dim <= 64 else 2)
        else:
            cfg = FwdConfig(64, 64, 4, 2)
    bm, bn = min(cfg.block_m, block_q), min(cfg.block_n, block_k)
    return FwdConfig(bm, bn, cfg.num_warps, cfg.num_stages, cfg.tma, cfg.ws, cfg.ftz)


@triton.jit
def exp2_ftz(x, FTZ: tl.constexpr):
    """exp2 as the single MUFU instruction (flush-to-zero), skipping the denormal fix-up of ``tl.math.exp2``."""
    if FTZ:
        return tl.inline_asm_elementwise("ex2.approx.ftz.f32 $0, $1;", "=f,f", [x], dtype=tl.float32,
                                         is_pure=True, pack=1)
    else:
        return tl.math.exp2(x)


@triton.jit
def _update(acc, l_i, m_i, q, k_t, v, offs_n, k_len, qk_scale, MASK_K: tl.constexpr, PRECISION: tl.constexpr,
            FTZ: tl.constexpr = False):
    """One online-softmax step over a [D, N] key tile and an [N, D] value tile (base-2 exponentials)."""
    qk = tl.dot(q, k_t, input_precision=PRECISION)
    if MASK_K:
        qk = tl.where(offs_n[None, :] < k_len, qk, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(qk, 1) * qk_scale)
    p = exp2_ftz(qk * qk_scale - m_new[:, None], FTZ)  # one FMA per score
    alpha = exp2_ftz(m_i - m_new, FTZ)
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = acc * alpha[:, None]
    acc = tl.dot(p.to(v.dtype), v, acc, input_precision=PRECISION)
    return acc, l_i, m_new


@triton.jit
def _step(
    acc, l_i, m_i, q, K, V, k_base, v_base, row_k, col_h, start_n, k_len, qk_scale, sks, svs,
    BLOCK_N: tl.constexpr, MASK_K: tl.constexpr, PRECISION: tl.constexpr, USE_TMA: tl.constexpr,
    FTZ: tl.constexpr,
):
    offs_n = start_n + tl.arange(0, BLOCK_N)
    if USE_TMA:
        # Rows past k_len read the next batch's keys or TMA zero fill: finite, and masked below.
        k_t = K.load([row_k + start_n, col_h]).T
        v = V.load([row_k + start_n, col_h])
    else:
        off = start_n.to(tl.int64)
        if MASK_K:
            k_t = tl.load(k_base + off * sks, mask=offs_n[None, :] < k_len, other=0.0)
            v = tl.load(v_base + off * svs, mask=offs_n[:, None] < k_len, other=0.0)
        else:
            k_t = tl.load(k_base + off * sks)
            v = tl.load(v_base + off * svs)
    return _update(acc, l_i, m_i, q, k_t, v, offs_n, k_len, qk_scale, MASK_K, PRECISION, FTZ)


@triton.jit
def _sparse_fwd_kernel(
    Q, K, V, O, LSE,  # noqa: E741
    KV_COUNT, KV_INDEX, ROW_ORDER,
    qk_scale,
    sqb, sqs, sqh,
    skb, sks, skh,
    svb, svs, svh,
    sob, sos, soh,
    slb, slh,
    nq, nk, max_k, q_len, k_len,
    HEAD_DIM: tl.constexpr,
    BLOCK_Q: tl.constexpr, BLOCK_K: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    EVEN_K: tl.constexpr, WRITE_LSE: tl.constexpr, PRECISION: tl.constexpr,
    USE_TMA: tl.constexpr, WS: tl.constexpr, FTZ: tl.constexpr,
):
    SPLIT_M: tl.constexpr = BLOCK_Q // BLOCK_M
    SUB_N: tl.constexpr = BLOCK_K // BLOCK_N
    pid = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    row = tl.load(ROW_ORDER + pid // SPLIT_M)
    h = (row // nq).to(tl.int64)
    qblk = row % nq
    offs_m = qblk * BLOCK_Q + (pid % SPLIT_M) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    offs_nb = tl.arange(0, BLOCK_N)

    col_h = (h * HEAD_DIM).to(tl.int32)
    row_k = (b * k_len).to(tl.int32)
    if USE_TMA:  # descriptors over the (B*S, H*D) views
        q = Q.load([(b * q_len).to(tl.int32) + qblk * BLOCK_Q + (pid % SPLIT_M) * BLOCK_M, col_h])
        k_base = K
        v_base = V
    else:
        q_ptrs = Q + b * sqb + h * sqh + offs_m[:, None].to(tl.int64) * sqs + offs_d[None, :]
        q = tl.load(q_ptrs, mask=offs_m[:, None] < q_len, other=0.0)
        k_base = K + b * skb + h * skh + offs_d[:, None] + offs_nb[None, :].to(tl.int64) * sks  # [D, N]
        v_base = V + b * svb + h * svh + offs_d[None, :] + offs_nb[:, None].to(tl.int64) * svs  # [N, D]

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)

    cnt = tl.load(KV_COUNT + row)
    idx_ptr = KV_INDEX + row.to(tl.int64) * max_k
    n_full = cnt
    if not EVEN_K:
        last = tl.load(idx_ptr + cnt - 1)
        n_full = cnt - (last == nk - 1).to(tl.int32)
    # Kept blocks that need no key masking (the sorted index puts the tail block last).
    for t in tl.range(0, n_full * SUB_N, warp_specialize=WS):
        kb = tl.load(idx_ptr + t // SUB_N)
        start_n = kb * BLOCK_K + (t % SUB_N) * BLOCK_N
        acc, l_i, m_i = _step(
            acc, l_i, m_i, q, K, V, k_base, v_base, row_k, col_h, start_n, k_len, qk_scale, sks, svs,
            BLOCK_N, False, PRECISION, USE_TMA, FTZ,
        )
    if not EVEN_K:
        for t in range(n_full * SUB_N, cnt * SUB_N):
            kb = tl.load(idx_ptr + t // SUB_N)
            start_n = kb * BLOCK_K + (t % SUB_N) * BLOCK_N
            acc, l_i, m_i = _step(
                acc, l_i, m_i, q, K, V, k_base, v_base, row_k, col_h, start_n, k_len, qk_scale, sks, svs,
                BLOCK_N, True, PRECISION, USE_TMA, FTZ,
            )

    acc = acc / l_i[:, None]
    o_ptrs = O + b * sob + h * soh + offs_m[:, None].to(tl.int64) * sos + offs_d[None, :]
    tl.store(o_ptrs, acc.to(O.dtype.element_ty), mask=offs_m[:, None] < q_len)
    if WRITE_LSE:
        lse = (m_i + tl.math.log2(l_i)) * 0.6931471805599453
        tl.store(LSE + b * slb + h * slh + offs_m, lse, mask=offs_m < q_len)


def _check_inputs(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layout: BlockLayout) -> None:
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError("q, k, v must be (B, S, H, D)")
    B, Sq, H, D = q.shape
    if k.shape != v.shape or k.shape[0] != B or k.shape[2:] != (H, D):
        raise ValueError(f"k {tuple(k.shape)} / v {tuple(v.shape)} do not match q {tuple(q.shape)}")
    if (Sq, k.shape[1], H) != (layout.q_len, layout.k_len, layout.heads):
        raise ValueError(f"inputs (Sq={Sq}, Sk={k.shape[1]}, H={H}) do not match {layout}")
    if D not in (16, 32, 64, 128, 256):
        raise ValueError(f"head dim {D} not supported (16..256, a power of two)")


def triton_sparse_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    layout: BlockLayout,
    scale: float | None = None,
    return_lse: bool = False,
    config: FwdConfig | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Block-sparse attention on (B, S, H, D) tensors (any strides with a unit last stride).

    Returns ``out`` (B, S, H, D) in q's dtype and, with ``return_lse``, the row log-sum-exp ``[B, H, S]``
    (float32, natural log) that the mass kernel consumes.
    """
    _check_inputs(q, k, v, layout)
    q, k, v = (x if x.stride(-1) == 1 else x.contiguous() for x in (q, k, v))
    B, Sq, H, D = q.shape
    layout = layout.to(q.device)
    cfg = config or default_config(q.device, D, layout.block_q, layout.block_k)
    if layout.block_q % cfg.block_m or layout.block_k % cfg.block_n:
        raise ValueError(f"config {cfg} does not tile blocks {layout.block_q}x{layout.block_k}")
    scale = 1.0 / math.sqrt(D) if scale is None else scale
    if out is None:
        out = torch.empty_like(q)
    lse = torch.empty(B, H, Sq, device=q.device, dtype=torch.float32) if return_lse else out
    kv_count, kv_index, row_order = layout.triton_tensors()
    grid = (row_order.numel() * (layout.block_q // cfg.block_m), B)
    qa, ka, va = q, k, v
    use_tma = cfg.tma and (q.is_cuda or _INTERPRET) and _tma_ok(q, k, v)
    if use_tma:
        qa = _desc(q, cfg.block_m)
        ka, va = _desc(k, cfg.block_n), _desc(v, cfg.block_n)
    _sparse_fwd_kernel[grid](
        qa, ka, va, out, lse,
        kv_count, kv_index, row_order,
        scale * _LOG2E,
        q.stride(0), q.stride(1), q.stride(2),
        k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2),
        out.stride(0), out.stride(1), out.stride(2),
        lse.stride(0) if return_lse else 0, lse.stride(1) if return_lse else 0,
        layout.num_q_blocks, layout.num_k_blocks, layout.max_k, Sq, k.shape[1],
        HEAD_DIM=D, BLOCK_Q=layout.block_q, BLOCK_K=layout.block_k,
        BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n,
        EVEN_K=k.shape[1] % layout.block_k == 0, WRITE_LSE=return_lse,
        PRECISION="ieee" if q.dtype == torch.float32 else "tf32",
        USE_TMA=use_tma, WS=cfg.ws, FTZ=cfg.ftz and q.is_cuda,
        num_warps=cfg.num_warps, num_stages=cfg.num_stages,
    )
    return (out, lse) if return_lse else out


def _tma_ok(*xs: torch.Tensor) -> bool:
    """The (B, S, H, D) tensors flatten to (B*S, H*D) views with 16-byte aligned rows."""
    for x in xs:
        B, S, H, D = x.shape
        if x.stride(3) != 1 or x.stride(2) != D or (B > 1 and x.stride(0) != S * x.stride(1)):
            return False
        if (x.stride(1) * x.element_size()) % 16 or x.data_ptr() % 16:
            return False
    return True


def _desc(x: torch.Tensor, rows: int):
    from triton.tools.tensor_descriptor import TensorDescriptor

    B, S, H, D = x.shape
    return TensorDescriptor(x, [B * S, H * D], [x.stride(1), 1], [rows, D])
