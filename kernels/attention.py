"""One entry point for block-sparse attention, ``sparse_attention(q, k, v, layout)``, with per-device backends.

``auto`` picks flash-attn-4 (optional extra, Hopper/Blackwell) -> our Triton kernel (other CUDA GPUs) ->
the CPU path. Each GPU backend is a ``torch.library`` custom op whose inputs include the layout's
tensors, so ``torch.compile`` treats it as one opaque node and CUDA graphs can capture it.
"""

from __future__ import annotations

import functools
import math

import torch

from .cpu import cpu_sparse_attention
from .layout import BlockLayout
from .triton_fwd import triton_sparse_attention

__all__ = ["BACKENDS", "BackendUnavailable", "available_backends", "choose_backend", "sparse_attention"]

BACKENDS = ("fa4", "triton", "flex", "cpu", "reference")


class BackendUnavailable(RuntimeError):
    """An explicitly requested backend cannot run here (missing package or device)."""


@functools.cache
def fa4_importable() -> bool:
    """flash-attn-4 (``flash_attn.cute``) is installed and imports."""
    try:
        from flash_attn.cute.block_sparsity import BlockSparseTensorsTorch  # noqa: F401
        from flash_attn.cute.interface import flash_attn_func  # noqa: F401
    except Exception:  # ImportError, or a broken CUDA/CuTe DSL install
        return False
    return True


def _fa4_device_ok(device: torch.device) -> bool:
    if device.type != "cuda" or not torch.cuda.is_available():
        return False
    return torch.cuda.get_device_capability(device)[0] in (9, 10)


_FA4_DTYPES = (torch.float16, torch.bfloat16)


@torch.compiler.assume_constant_result
def _unavailable_reason(backend: str, device: torch.device, dtype: torch.dtype | None = None) -> str | None:
    if backend not in BACKENDS:
        return f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)} or 'auto'"
    if backend in ("cpu", "reference"):
        return None
    if device.type != "cuda" or not torch.cuda.is_available():
        return f"backend {backend!r} needs a CUDA device, inputs are on {device}"
    if backend == "fa4":
        if not fa4_importable():
            return "backend 'fa4' needs flash-attn-4: pip install 'calibstudio[fa4]'"
        if not _fa4_device_ok(device):
            return "backend 'fa4' needs a Hopper (sm90) or Blackwell (sm100) GPU"
        if dtype is not None and dtype not in _FA4_DTYPES:
            return f"backend 'fa4' takes float16 or bfloat16 inputs, not {dtype}: use 'triton' (or 'auto')"
    return None


def available_backends(device: torch.device | str) -> list[str]:
    """Backends that can run on ``device`` here, in auto-preference order."""
    device = torch.device(device)
    return [b for b in BACKENDS if _unavailable_reason(b, device) is None]


def choose_backend(device: torch.device | str, backend: str = "auto", dtype: torch.dtype | None = None) -> str:
    """Resolve ``auto`` for a device (and the inputs' dtype, when known: flash-attn-4 takes half precision
    only, so a float32 model on a Hopper GPU gets our Triton kernel), or check an explicit choice (raises
    :class:`BackendUnavailable`)."""
    device = torch.device(device)
    if backend == "auto":
        if device.type == "cuda":
            return "fa4" if _unavailable_reason("fa4", device, dtype) is None else "triton"
        return "cpu"
    why = _unavailable_reason(backend, device, dtype)
    if why:
        raise BackendUnavailable(why)
    return backend


# Above this fraction of kept blocks a layer runs faster through the best dense kernel than sparse on this
# backend (measured side by side: CPU path at S=4096 and 2048, H=4, D=64, blocks of 128, 2 cores, freed
# memory kept: 1.34-1.52x at 0.5, 1.15-1.22x at 0.6, 1.00-1.04x at 0.7, 0.89-0.91x at 0.8; our Triton kernel
# on an H100 at S=32 760 reaches cuDNN dense near 0.65; flash-attn-4's sparse path matches its dense time at
# density 1, docs/benchmarks/kernels-h100.json).
DENSE_ABOVE = {"cpu": 0.7, "triton": 0.65, "flex": 0.6, "fa4": 1.0, "reference": 1.0}


def dense_is_faster(density: float, device: torch.device | str, backend: str = "auto",
                    dtype: torch.dtype | None = None) -> bool:
    """Whether a layer keeping ``density`` of its blocks is better run densely on ``backend`` (exact, and faster)."""
    return density > DENSE_ABOVE[choose_backend(device, backend, dtype)]


# ---------------------------------------------------------------------------------------------- custom ops
def _op_layout(kv_count: torch.Tensor, kv_index: torch.Tensor, block_q: int, block_k: int, q_len: int, k_len: int,
               row_order: torch.Tensor | None = None) -> BlockLayout:
    lay = BlockLayout(kv_count, kv_index, block_q, block_k, q_len, k_len)
    if row_order is not None:
        lay._cache["row_order"] = row_order
    return lay


@torch.library.custom_op("calibstudio::triton_sparse_fwd", mutates_args=())
def _triton_op(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kv_count: torch.Tensor, kv_index: torch.Tensor,
    row_order: torch.Tensor, block_q: int, block_k: int, scale: float,
) -> torch.Tensor:
    lay = _op_layout(kv_count, kv_index, block_q, block_k, q.shape[1], k.shape[1], row_order)
    return triton_sparse_attention(q, k, v, lay, scale=scale, out=torch.empty_like(q))


@_triton_op.register_fake
def _(q, k, v, kv_count, kv_index, row_order, block_q, block_k, scale):
    return torch.empty_like(q)


@torch.library.custom_op("calibstudio::fa4_sparse_fwd", mutates_args=())
def _fa4_op(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kv_count: torch.Tensor, kv_index: torch.Tensor,
    block_q: int, block_k: int, scale: float,
) -> torch.Tensor:
    from flash_attn.cute.interface import flash_attn_func

    lay = _op_layout(kv_count, kv_index, block_q, block_k, q.shape[1], k.shape[1])
    res = flash_attn_func(q, k, v, softmax_scale=scale, block_sparse_tensors=lay.to_fa4())
    out = res[0] if isinstance(res, tuple) else res
    return out.clone() if out.data_ptr() in (q.data_ptr(), k.data_ptr(), v.data_ptr()) else out


@_fa4_op.register_fake
def _(q, k, v, kv_count, kv_index, block_q, block_k, scale):
    return torch.empty(q.shape, dtype=q.dtype, device=q.device)


@torch.library.custom_op("calibstudio::cpu_sparse_fwd", mutates_args=())
def _cpu_op(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kv_count: torch.Tensor, kv_index: torch.Tensor,
    block_q: int, block_k: int, scale: float,
) -> torch.Tensor:
    lay = _op_layout(kv_count, kv_index, block_q, block_k, q.shape[1], k.shape[1])
    # contiguous, as the fake says: compiled graphs assert the strides (the caller's reshape would copy anyway)
    return cpu_sparse_attention(q, k, v, lay, scale=scale).contiguous()


@_cpu_op.register_fake
def _(q, k, v, kv_count, kv_index, block_q, block_k, scale):
    return torch.empty(q.shape, dtype=q.dtype, device=q.device)


@functools.cache
def _compiled_flex():
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False)


def flex_sparse_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layout: BlockLayout, scale: float | None = None
) -> torch.Tensor:
    """FlexAttention with the layout's ``BlockMask`` (the peer baseline), on (B, S, H, D)."""
    out = _compiled_flex()(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), block_mask=layout.to_flex(), scale=scale
    )
    return out.transpose(1, 2)


def sparse_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    layout: BlockLayout,
    backend: str = "auto",
    scale: float | None = None,
) -> torch.Tensor:
    """Block-sparse attention on diffusers' (B, S, H, D) layout; ``layout`` gives the kept blocks per head.

    ``backend``: ``auto`` (per device), or one of :data:`BACKENDS`; an explicit backend that cannot run
    here raises :class:`BackendUnavailable` instead of silently falling back.
    """
    name = choose_backend(q.device, backend, q.dtype)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    if layout.device != q.device:
        layout = layout.to(q.device)
    if name == "fa4":
        return _fa4_op(q, k, v, layout.kv_count, layout.kv_index, layout.block_q, layout.block_k, scale)
    if name == "triton":
        return _triton_op(q, k, v, layout.kv_count, layout.kv_index, layout.row_order(), layout.block_q,
                          layout.block_k, scale)
    if name == "flex":
        return flex_sparse_attention(q, k, v, layout, scale)
    if name == "cpu":
        return _cpu_op(q, k, v, layout.kv_count, layout.kv_index, layout.block_q, layout.block_k, scale)
    from .reference import reference_attention

    return reference_attention(q, k, v, layout, scale)
