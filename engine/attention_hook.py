"""The attention hook: routes a video transformer's self-attention through dense, record or sparse attention.

The hook owns the *policy* (which step and layer a call belongs to, which layout to use, where
recorded mass goes); the model adapter owns the *math around* attention (projections, norms,
RoPE) through a processor installed with diffusers' own ``set_processor``, and may swap in fused
forwards of the same math (``fused_forwards``: e.g. a GEMM with its activation in the epilogue).
Installing and removing is a context manager that restores the exact processors and forwards that
were there, so two models in one process, or one model hooked twice in turn, do not interfere.
Cross-attention is never touched.

``torch.compile`` of a hooked transformer: installed processors call :func:`attend_at`, which hands the
call to the installed hook through one opaque custom op (``calibstudio::hooked_attention``). The
per-step choices (step bin, dense steps, layouts, recorders) then stay in Python outside the graph and
the processors hold only (site, layer) numbers, so one compiled graph serves every step and every job
(traced, the step would be a guard: a recompile per step bin, and eager after dynamo's limit).
The op is tagged ``cudagraph_unsafe``: a CUDA graph would record its kernels with the layout of the
step it was captured at and replay them for every later step and job; inductor instead leaves it out
of the graphs it captures (``mode="reduce-overhead"`` / ``"max-autotune"``), and the hook chooses anew
on each call.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Literal, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from calibstudio.engine.profile import Profile, ProfileError
from calibstudio.kernels.norm_rope import needs_autograd

if TYPE_CHECKING:
    from calibstudio.engine.models.base import VideoModelAdapter
    from calibstudio.kernels.layout import BlockLayout

Mode = Literal["dense", "record", "sparse"]


def dense_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Plain SDPA on diffusers' (B, S, H, D) layout."""
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    return out.transpose(1, 2)


# transformer id -> the hook installed on it now (what attend_at dispatches to)
_INSTALLED: dict[int, AttentionHook] = {}


def attend_at(site: int, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Self-attention of ``layer`` through the hook installed on transformer ``site`` (an installed
    processor's one call into the hook), on diffusers' (B, S, H, D) layout."""
    if needs_autograd(q, k, v):  # training through the hook (a penalty's dense_fn): the op has no backward
        return _INSTALLED[site].attend(layer, q, k, v)
    return _hooked_attention(q, k, v, site, layer)


@torch.library.custom_op("calibstudio::hooked_attention", mutates_args=(),
                         tags=tuple(t for t in (getattr(torch.Tag, "cudagraph_unsafe", None),) if t is not None))
def _hooked_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, site: int, layer: int) -> torch.Tensor:
    # contiguous, as the fake says (the caller's flatten would copy a transposed result anyway)
    return _INSTALLED[site].attend(layer, q, k, v).contiguous()


@_hooked_attention.register_fake
def _(q, k, v, site, layer):
    return torch.empty(q.shape, dtype=q.dtype, device=q.device)


class Recorder(Protocol):
    """What ``record`` mode reports every self-attention call to, after computing it densely (``lse``: the
    call's row log-sum-exp ``[B, H, S]`` where the dense pass gave it, else None). ``wants_lse``: whether
    the dense pass should give it (on CUDA that pass is then our Triton forward, not the model's SDPA)."""

    wants_lse: bool

    def add(self, step: int, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
            out: torch.Tensor, lse: torch.Tensor | None = None) -> None: ...


class MassRecorder:
    """Accumulates block attention mass per (prompt, step bin, layer) during calibration.

    Sums raw mass (softmax probability summed over the queries of a query block and the keys of a
    key block); the profile normalises rows, so calls with more queries simply weigh more.
    """

    wants_lse = True  # the mass needs the row LSE; from the dense pass it costs no second attention pass

    def __init__(self, prompts: int, step_bins: tuple[tuple[int, int], ...], layers: int, heads: int,
                 nq: int, nk: int, block: tuple[int, int]) -> None:
        self.step_bins = step_bins
        self.block = block
        self.mass = np.zeros((prompts, len(step_bins), layers, heads, nq, nk), dtype=np.float32)
        self.prompt = 0

    def bin_of(self, step: int) -> int:
        for b, (start, end) in enumerate(self.step_bins):
            if start <= step < end:
                return b
        raise ProfileError(f"step {step} is outside the calibrated step bins {list(self.step_bins)}")

    def add(self, step: int, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
            out: torch.Tensor, lse: torch.Tensor | None = None) -> None:
        """Record one dense call (``v`` and the output are not needed for mass)."""
        from calibstudio.kernels.mass import block_mass

        mass = block_mass(q, k, lse, block_q=self.block[0], block_k=self.block[1])
        self.mass[self.prompt, self.bin_of(step), layer] += mass.float().cpu().numpy()


class AttentionHook:
    """Install with ``with AttentionHook(...) as hook:``; removal restores the original processors.

    ``dense_fn`` replaces the model's own attention in ``dense`` mode (e.g. a faster dense kernel);
    ``layouts`` fixes one layout per layer for every step instead of a profile (benchmarks).
    ``step_source`` returns the index of the denoising step in progress (a Python int, so reading
    it never syncs with the device). In ``sparse`` mode the layout of each (step bin, layer) is
    built on first use from the profile at ``threshold`` and kept for the life of the hook (one
    job), never per call. ``dense_steps``: the first steps run dense even in ``sparse`` mode — the
    early, noisy steps decide a clip's layout, and a small error there moves objects (Sparse
    VideoGen and its peers keep them dense for the same reason).
    """

    def __init__(
        self,
        adapter: VideoModelAdapter,
        transformer: torch.nn.Module,
        mode: Mode = "dense",
        step_source: Callable[[], int] | None = None,
        profile: Profile | None = None,
        threshold: float = 0.999,
        recorder: Recorder | None = None,
        backend: str = "auto",
        layouts: Mapping[int, BlockLayout] | None = None,
        dense_fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        dense_steps: int = 0,
    ) -> None:
        if mode == "sparse" and profile is None and layouts is None:
            raise ValueError("sparse mode needs a profile (or fixed per-layer layouts)")
        if mode == "record" and recorder is None:
            raise ValueError("record mode needs a recorder (MassRecorder, ErrorRecorder)")
        self.adapter = adapter
        self.transformer = transformer
        self.mode: Mode = mode
        self.step_source = step_source or (lambda: 0)
        self.profile = profile
        self.threshold = threshold
        self.recorder = recorder
        self.backend = backend
        self._layouts: dict[tuple[int, int], BlockLayout | None] = {}
        self._fixed = layouts  # per layer, for every step (benchmarks with synthetic masks)
        self.dense_fn = dense_fn or dense_attention
        self.dense_steps = dense_steps
        self._saved: list[tuple[torch.nn.Module, object]] = []
        self._forwards: list[tuple[torch.nn.Module, Callable | None]] = []  # module, instance forward before
        self._previous: AttentionHook | None = None  # the hook installed on the transformer before this one
        if profile is not None:
            profile.effective_threshold(threshold)  # a threshold out of range fails here, not mid-job

    def __enter__(self) -> AttentionHook:
        if not self.installed:
            self.install()
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    @property
    def installed(self) -> bool:
        return bool(self._saved)

    def install(self) -> None:
        if self._saved:
            raise RuntimeError("this hook is already installed")
        if self.mode == "dense" and self.dense_fn is dense_attention:
            return  # dense is the model's own attention: nothing to install, nothing to slow down
        site = id(self.transformer)
        self._previous = _INSTALLED.get(site)
        _INSTALLED[site] = self
        for layer, module in self.adapter.self_attention_modules(self.transformer):
            self._saved.append((module, module.processor))
            module.set_processor(self.adapter.make_processor(site, layer))
        for module, forward in self.adapter.fused_forwards(self.transformer):
            self._forwards.append((module, vars(module).get("forward")))
            module.forward = forward  # an instance attribute: deleting it brings back the class's forward

    def remove(self) -> None:
        site = id(self.transformer)
        if _INSTALLED.get(site) is self:
            if self._previous is None:
                del _INSTALLED[site]
            else:
                _INSTALLED[site] = self._previous
        for module, processor in reversed(self._saved):
            module.set_processor(processor)
        self._saved.clear()
        for module, before in reversed(self._forwards):
            if before is None:
                del module.forward
            else:
                module.forward = before  # another hook's, installed earlier and still in place
        self._forwards.clear()

    def layout(self, bin_index: int, layer: int, device: torch.device,
               dtype: torch.dtype | None = None) -> BlockLayout | None:
        """The compiled layout of one (step bin, layer), built once per hook.

        None when the mask keeps so many blocks that the dense kernel is faster on this backend
        (``kernels.attention.DENSE_ABOVE``): that layer then runs dense, which is also exact.
        """
        key = (bin_index, layer)
        if key not in self._layouts:
            from calibstudio.kernels.attention import dense_is_faster
            from calibstudio.kernels.layout import BlockLayout

            meta = self.profile.meta
            mask = torch.from_numpy(self.profile.mask(bin_index, layer, self.threshold))
            self._layouts[key] = None if dense_is_faster(float(mask.float().mean()), device, self.backend, dtype) else (
                BlockLayout.from_mask(mask.to(device), meta.block_size[0], meta.block_size[1],
                                      q_len=meta.tokens, k_len=meta.tokens))
        return self._layouts[key]

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Self-attention of ``layer`` on (B, S, H, D) for the current step, by the hook's mode."""
        if self.mode == "sparse" and self.step_source() >= self.dense_steps:
            from calibstudio.kernels.attention import sparse_attention

            if self._fixed is not None:
                return sparse_attention(q, k, v, self._fixed[layer], backend=self.backend)
            if q.shape[1] != self.profile.meta.tokens:
                raise ProfileError(f"the profile was calibrated for {self.profile.meta.tokens} video tokens "
                                   f"(grid {self.profile.meta.grid}); this call has {q.shape[1]}: generate at the "
                                   f"calibrated size or calibrate for this one")
            layout = self.layout(self.profile.meta.bin_of_step(self.step_source()), layer, q.device, q.dtype)
            if layout is not None:
                return sparse_attention(q, k, v, layout, backend=self.backend)
        if self.mode != "record":
            return self.dense_fn(q, k, v)
        if self.recorder.wants_lse and self.dense_fn is dense_attention:  # the same result, with the LSE
            from calibstudio.kernels.mass import dense_attention_lse

            out, lse = dense_attention_lse(q, k, v)
        else:
            out, lse = self.dense_fn(q, k, v), None
        self.recorder.add(self.step_source(), layer, q, k, v, out, lse)
        return out
