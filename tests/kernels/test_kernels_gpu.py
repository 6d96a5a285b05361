"""Kernels on a CUDA GPU (run on the lent device): Triton, fa4, Flex and the mass kernel against references."""

import math
import time

import pytest
import torch

from calibstudio.kernels.attention import available_backends, choose_backend, sparse_attention
from calibstudio.kernels.layout import BlockLayout
from calibstudio.kernels.masks import random_block_mask, video_block_mask
from calibstudio.kernels.mass import torch_block_mass, triton_block_mass
from calibstudio.kernels.norm_rope import fusable, norm_rope, norm_rope_reference
from calibstudio.kernels.reference import reference_attention, reference_lse
from calibstudio.kernels.triton_fwd import triton_sparse_attention

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def _rel(a, b):
    return float((a.float() - b.float()).norm() / b.float().norm())


def _case(S, H, D, density, dtype=torch.bfloat16, seed=0, block=128):
    g = torch.Generator(device="cuda").manual_seed(seed)
    q, k, v = (torch.randn(1, S, H, D, device="cuda", dtype=dtype, generator=g) for _ in range(3))
    nb = -(-S // block)
    lay = BlockLayout.from_mask(random_block_mask(H, nb, nb, density, seed=seed, device="cuda"), block, block, S, S)
    return q, k, v, lay


@pytest.mark.parametrize("S", [200, 333, 1000, 4096])
@pytest.mark.parametrize("D", [64, 128])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_triton_fwd_gpu(S, D, dtype):
    q, k, v, lay = _case(S, 4, D, 0.4, dtype, seed=S + D)
    out, lse = triton_sparse_attention(q, k, v, lay, return_lse=True)
    ref = reference_attention(q.double(), k.double(), v.double(), lay)
    assert _rel(out, ref) < 1e-2
    assert float((lse - reference_lse(q, k, lay)).abs().max()) < 1e-2


@pytest.mark.parametrize("backend", ["fa4", "flex"])
def test_peer_backends_match(backend):
    if backend not in available_backends("cuda"):
        pytest.skip(f"{backend} unavailable")
    for S in (1000, 4096):
        q, k, v, lay = _case(S, 4, 128, 0.3, seed=S)
        out = sparse_attention(q, k, v, lay, backend=backend)
        ref = reference_attention(q.double(), k.double(), v.double(), lay)
        assert _rel(out, ref) < 1e-2, (backend, S)


def test_auto_backend_and_custom_op_under_compile_and_graphs():
    q, k, v, lay = _case(1000, 4, 128, 0.3, seed=3)
    for backend in ("auto", "triton"):
        ref = reference_attention(q.double(), k.double(), v.double(), lay)
        f = torch.compile(lambda q, k, v, b=backend: sparse_attention(q, k, v, lay, backend=b) * 2, fullgraph=True)
        assert _rel(f(q, k, v) / 2, ref) < 1e-2
        sparse_attention(q, k, v, lay, backend=backend)  # warm
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = sparse_attention(q, k, v, lay, backend=backend)
        q.copy_(torch.randn_like(q))
        graph.replay()
        torch.cuda.synchronize()
        ref2 = reference_attention(q.double(), k.double(), v.double(), lay)
        assert _rel(out, ref2) < 1e-2, backend
    assert choose_backend("cuda") in ("fa4", "triton")


def test_mass_kernel_gpu():
    g = torch.Generator(device="cuda").manual_seed(0)
    q, k = (torch.randn(2, 1000, 3, 128, device="cuda", dtype=torch.bfloat16, generator=g) for _ in range(2))
    ref = torch_block_mass(q.float(), k.float(), None)
    _, lse = triton_sparse_attention(q, k, k, BlockLayout.dense(3, 1000, device="cuda"), return_lse=True)
    for fast in (0, 1, 2):
        got = triton_block_mass(q, k, lse, fast_exp=fast)
        assert _rel(got, ref) < 2e-2, fast
        assert abs(float(got.sum()) - 2 * 3 * 1000) < 0.02 * 6000


def test_layout_build_time_720p():
    S, H = 75600, 40
    m = video_block_mask(H, (21, 45, 80), 0.125, device="cuda")
    BlockLayout.from_mask(m, 128, 128, S, S)
    ts = []
    for _ in range(10):
        torch.cuda.synchronize()
        t = time.perf_counter()
        BlockLayout.from_mask(m, 128, 128, S, S)
        torch.cuda.synchronize()
        ts.append(time.perf_counter() - t)
    ms = 1e3 * sorted(ts)[len(ts) // 2]
    print(f"layout build 40x591x591: {ms:.2f} ms")
    assert ms < 5.0
    assert math.isclose(BlockLayout.from_mask(m, 128, 128, S, S).density, 0.125, rel_tol=1e-3)


@pytest.mark.parametrize("D", [64, 128])
def test_norm_rope_gpu_matches_diffusers_eager_and_compiled(D):
    """The fused Wan q/k norm + RoPE against diffusers' sequence, in bf16 with bf16 tables (as a bf16 model has)."""
    H, S = 40 if D == 128 else 12, 3000
    g = torch.Generator(device="cuda").manual_seed(D)
    x = torch.randn(2, S, H * D, device="cuda", generator=g).bfloat16()
    norm = torch.nn.RMSNorm(H * D, eps=1e-6, device="cuda").bfloat16()
    with torch.no_grad():
        norm.weight.copy_(0.5 + torch.rand(H * D, device="cuda", generator=g))
    angle = 40 * torch.rand(1, S, 1, D // 2, device="cuda", generator=g)
    cos, sin = angle.cos().repeat_interleave(2, -1).bfloat16(), angle.sin().repeat_interleave(2, -1).bfloat16()
    with torch.no_grad():  # generation runs without autograd (diffusers' pipelines, our trajectories)
        assert fusable(x, norm)
        want = norm_rope_reference(x.float(), norm.float(), H, cos.float(), sin.float())
        eager = norm_rope(x, norm, H, cos, sin)
        compiled = torch.compile(lambda x: norm_rope(x, norm, H, cos, sin) * 1, fullgraph=True)(x)
    assert _rel(eager, want) < 1e-2 and _rel(compiled, want) < 1e-2


def test_norm_rope_gpu_trains_through_diffusers_path():
    """The fused kernel has no backward: when a gradient is wanted (fine-tuning through the hook) it steps aside."""
    H, D, S = 4, 64, 256
    x = torch.randn(1, S, H * D, device="cuda", requires_grad=True)
    norm = torch.nn.RMSNorm(H * D, eps=1e-6, device="cuda")
    angle = torch.rand(1, S, 1, D // 2, device="cuda")
    cos, sin = angle.cos().repeat_interleave(2, -1), angle.sin().repeat_interleave(2, -1)
    assert not fusable(x, norm)
    norm_rope(x, norm, H, cos, sin).square().sum().backward()
    want = x.grad.clone()
    x.grad = None
    norm_rope_reference(x, norm, H, cos, sin).square().sum().backward()
    torch.testing.assert_close(want, x.grad)
