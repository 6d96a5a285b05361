"""Kernels on the CPU: layout edge cases, CPU path, backend choice, and the Triton kernels interpreted."""

import json

import pytest
import torch

from calibstudio.kernels.attention import BackendUnavailable, available_backends, choose_backend, sparse_attention
from calibstudio.kernels.cpu import cpu_sparse_attention
from calibstudio.kernels.layout import BlockLayout, EmptyRowError
from calibstudio.kernels.masks import random_block_mask, video_block_mask
from calibstudio.kernels.mass import torch_block_mass, triton_block_mass
from calibstudio.kernels.norm_rope import fusable, norm_rope, norm_rope_reference
from calibstudio.kernels.reference import reference_attention, reference_block_mass, reference_lse
from calibstudio.kernels.triton_fwd import FwdConfig, triton_sparse_attention


def _interpreted() -> bool:
    """Our kernels were decorated in interpreter mode (triton was first imported after the env var was set)."""
    from triton.runtime.interpreter import InterpretedFunction

    from calibstudio.kernels import triton_fwd

    return isinstance(triton_fwd._sparse_fwd_kernel, InterpretedFunction)


INTERPRETED = _interpreted()


def _qkv(B, S, H, D, seed, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, S, H, D, generator=g, dtype=dtype) for _ in range(3)]


def _layout(H, S, block, density, seed):
    nb = -(-S // block)
    return BlockLayout.from_mask(random_block_mask(H, nb, nb, density, seed=seed), block, block, S, S)


# ------------------------------------------------------------------------------------------------ layout
def test_layout_sorted_padded_and_roundtrip():
    m = random_block_mask(3, 6, 9, 0.3, seed=2)
    lay = BlockLayout.from_mask(m, 64, 32, 6 * 64 - 5, 9 * 32 - 7)
    assert torch.equal(lay.to_mask(), m)
    assert lay.kv_count.dtype == torch.int32 and lay.kv_index.dtype == torch.int32
    assert lay.max_k == int(m.sum(-1).max())
    for h in range(3):
        for i in range(6):
            c = int(lay.kv_count[h, i])
            row = lay.kv_index[h, i].tolist()
            assert row[:c] == sorted(torch.nonzero(m[h, i]).flatten().tolist())
            assert all(x == row[c - 1] for x in row[c:])
    assert abs(lay.density - m.double().mean().item()) < 1e-9
    assert "density=" in repr(lay)


def test_layout_rejects_empty_row_naming_it():
    m = torch.ones(2, 3, 4, dtype=torch.bool)
    m[1, 2] = False
    with pytest.raises(EmptyRowError, match="head 1, query block 2"):
        BlockLayout.from_mask(m)


def test_layout_dense_and_single_block():
    d = BlockLayout.dense(4, 300, block_q=128, block_k=128)
    assert d.density == 1.0 and d.max_k == 3 and d.num_q_blocks == 3
    s = BlockLayout.from_mask(torch.ones(1, 1, 1, dtype=torch.bool), 64, 64, 10, 10)
    assert s.max_k == 1 and s.kept == 1
    q, k, v = _qkv(1, 10, 1, 16, 0)
    torch.testing.assert_close(cpu_sparse_attention(q, k, v, s), reference_attention(q, k, v, s), atol=1e-5, rtol=0)


def test_layout_launch_order_head_by_head_heaviest_first():
    """The Triton launch order visits every row once, a whole head at a time (its K/V stays in L2), and the
    longest rows of a head first."""
    mask = random_block_mask(3, 7, 9, 0.4, seed=2)
    lay = BlockLayout.from_mask(mask, 16, 16)
    order = lay.row_order().long()
    assert sorted(order.tolist()) == list(range(3 * 7))
    heads = order // 7
    assert torch.equal(heads, torch.arange(3).repeat_interleave(7))
    counts = lay.kv_count.reshape(-1)[order].view(3, 7)
    assert (counts[:, :-1] >= counts[:, 1:]).all()
    assert not torch.equal(counts.reshape(-1), lay.kv_count.reshape(-1))  # the mask's rows differ: sorted


def test_layout_rejects_bad_lengths():
    with pytest.raises(ValueError, match="q_len"):
        BlockLayout.from_mask(torch.ones(1, 2, 2, dtype=torch.bool), 128, 128, 300, 256)


def test_masks_hit_density():
    for fam in ("random", "video"):
        m = random_block_mask(4, 20, 20, 0.25) if fam == "random" else video_block_mask(4, (4, 10, 16), 0.25, 32)
        assert abs(m.float().mean().item() - 0.25) < 0.01
        assert bool(m.any(-1).all())  # the diagonal keeps every row non-empty


# ------------------------------------------------------------------------------------------------ CPU path
@pytest.mark.parametrize("S", [64, 200, 333])
@pytest.mark.parametrize("density", [1.0, 0.3])
def test_cpu_path_matches_reference(S, density):
    q, k, v = _qkv(2, S, 3, 64, S)
    lay = _layout(3, S, 64, density, S)
    out, lse = cpu_sparse_attention(q, k, v, lay, return_lse=True)
    torch.testing.assert_close(out, reference_attention(q, k, v, lay), atol=1e-4, rtol=0)
    torch.testing.assert_close(lse, reference_lse(q, k, lay), atol=1e-4, rtol=0)
    torch.testing.assert_close(cpu_sparse_attention(q, k, v, lay), out, atol=1e-5, rtol=0)


def test_cpu_path_rows_keeping_every_key_block_among_sparse_ones(monkeypatch):
    """A dense head next to sparse ones (the demo model's layer 0) reads its K/V in place, in chunks."""
    import calibstudio.kernels.cpu as cpu

    monkeypatch.setattr(cpu, "_SCORES", 2 * 64 * 384)  # two query blocks a call: the chunks are exercised
    q, k, v = _qkv(2, 333, 3, 64, 7)
    mask = random_block_mask(3, 6, 6, 0.3, seed=3)
    mask[0] = True
    mask[2, 4] = True
    lay = BlockLayout.from_mask(mask, 64, 64, 333, 333)
    out, lse = cpu_sparse_attention(q, k, v, lay, return_lse=True)
    torch.testing.assert_close(out, reference_attention(q, k, v, lay), atol=1e-4, rtol=0)
    torch.testing.assert_close(lse, reference_lse(q, k, lay), atol=1e-4, rtol=0)
    torch.testing.assert_close(cpu_sparse_attention(q, k, v, lay), out, atol=1e-5, rtol=0)


def test_cpu_path_strided_input_and_bf16():
    qkv = torch.randn(1, 200, 3, 2, 64)  # a packed projection: q, k, v are strided views
    q, k, v = qkv.unbind(2)
    lay = _layout(2, 200, 64, 0.5, 1)
    torch.testing.assert_close(cpu_sparse_attention(q, k, v, lay), reference_attention(q, k, v, lay),
                               atol=1e-4, rtol=0)
    qb, kb, vb = (x.bfloat16() for x in (q, k, v))
    out = cpu_sparse_attention(qb, kb, vb, lay)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), reference_attention(qb, kb, vb, lay).float(), atol=2e-2, rtol=0)


def test_torch_block_mass_matches_reference():
    q, k, _ = _qkv(2, 200, 2, 32, 5)
    ref = reference_block_mass(q, k, 64, 64)
    for chunk in (2, 3):  # 3: the last chunk holds one query block, a short one
        torch.testing.assert_close(torch_block_mass(q, k, None, 64, 64, chunk=chunk), ref, atol=1e-4, rtol=0)
    torch.testing.assert_close(torch_block_mass(q, k, reference_lse(q, k), 64, 64), ref, atol=1e-4, rtol=0)
    assert abs(ref.sum().item() - 2 * 2 * 200) < 1e-2  # each query row's probabilities sum to 1


# ------------------------------------------------------------------------------------------------ backends
def test_backend_choice_falls_back_on_cpu():
    assert choose_backend("cpu") == "cpu"
    assert "cpu" in available_backends("cpu") and "fa4" not in available_backends("cpu")
    q, k, v = _qkv(1, 200, 2, 64, 3)
    lay = _layout(2, 200, 64, 0.5, 3)
    torch.testing.assert_close(sparse_attention(q, k, v, lay), reference_attention(q, k, v, lay), atol=1e-4, rtol=0)
    for b in ("fa4", "triton", "flex"):
        with pytest.raises(BackendUnavailable):
            sparse_attention(q, k, v, lay, backend=b)
    with pytest.raises(BackendUnavailable, match="unknown backend"):
        choose_backend("cpu", "nope")


def test_backend_choice_without_fa4(monkeypatch):
    import calibstudio.kernels.attention as att

    monkeypatch.setattr(att, "fa4_importable", lambda: False)
    monkeypatch.setattr(att.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(att.torch.cuda, "get_device_capability", lambda *a: (9, 0))
    assert att.choose_backend(torch.device("cuda", 0)) == "triton"
    with pytest.raises(BackendUnavailable, match="flash-attn-4"):
        att.choose_backend(torch.device("cuda", 0), "fa4")


def test_float32_on_hopper_gets_the_triton_kernel(monkeypatch):
    """flash-attn-4 takes half precision only: a float32 model on an H100 crashed inside it before."""
    import calibstudio.kernels.attention as att

    monkeypatch.setattr(att, "fa4_importable", lambda: True)
    monkeypatch.setattr(att.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(att.torch.cuda, "get_device_capability", lambda *a: (9, 0))
    cuda = torch.device("cuda", 0)
    assert att.choose_backend(cuda, dtype=torch.bfloat16) == "fa4"
    assert att.choose_backend(cuda, dtype=torch.float32) == "triton"
    assert att.dense_is_faster(0.8, cuda, dtype=torch.float32) and not att.dense_is_faster(0.8, cuda)
    with pytest.raises(BackendUnavailable, match="float16 or bfloat16"):
        att.choose_backend(cuda, "fa4", torch.float32)


def test_custom_op_compiles_on_cpu():
    """Inductor, not just dynamo: its generated code asserts the op's output strides against the fake's."""
    q, k, v = _qkv(1, 128, 2, 32, 4)
    lay = _layout(2, 128, 64, 0.5, 4)
    f = torch.compile(lambda q, k, v: sparse_attention(q, k, v, lay) * 2, fullgraph=True)
    torch.testing.assert_close(f(q, k, v), 2 * reference_attention(q, k, v, lay), atol=1e-4, rtol=0)


# ------------------------------------------------------------------------------------------------ Triton, interpreted
@pytest.mark.skipif(not INTERPRETED, reason="interpreter tests run where there is no GPU")
@pytest.mark.parametrize("S", [64, 200, 333])
@pytest.mark.parametrize("D", [64, 128])
def test_triton_fwd_interpreted(S, D):
    q, k, v = _qkv(1, S, 2, D, S + D)
    lay = _layout(2, S, 64, 0.5, S)
    cfg = FwdConfig(block_m=32, block_n=32, num_warps=4, num_stages=1)  # split rows and blocks: all paths
    out, lse = triton_sparse_attention(q, k, v, lay, return_lse=True, config=cfg)
    torch.testing.assert_close(out, reference_attention(q, k, v, lay), atol=1e-4, rtol=0)
    torch.testing.assert_close(lse, reference_lse(q, k, lay), atol=1e-4, rtol=0)


@pytest.mark.skipif(not INTERPRETED, reason="interpreter tests run where there is no GPU")
def test_triton_fwd_interpreted_strided_default_config():
    qkv = torch.randn(2, 150, 2, 3, 64)  # (B, S, H, 3, D): q, k, v strided views, no copies
    q, k, v = qkv.unbind(3)
    lay = _layout(2, 150, 64, 0.6, 7)
    torch.testing.assert_close(triton_sparse_attention(q, k, v, lay), reference_attention(q, k, v, lay),
                               atol=1e-4, rtol=0)


@pytest.mark.skipif(not INTERPRETED, reason="interpreter tests run where there is no GPU")
@pytest.mark.parametrize("S", [64, 200, 333])
@pytest.mark.parametrize("D", [64, 128])
def test_triton_mass_interpreted(S, D):
    q, k, _ = _qkv(2 if S == 200 else 1, S, 2 if S == 333 else 1, D, S * D)
    lse = reference_lse(q, k)
    ref = reference_block_mass(q, k, 64, 64)
    got = triton_block_mass(q, k, lse, 64, 64, num_warps=4, num_stages=1, chunk=4)
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=0)
    # programs over key ranges of 2 blocks: 333 tokens = 6 key blocks, the last one partial
    got = triton_block_mass(q, k, lse, 64, 64, num_warps=4, num_stages=1, chunk=2, key_blocks=2)
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=0)


@pytest.mark.skipif(not INTERPRETED, reason="interpreter tests run where there is no GPU")
@pytest.mark.parametrize("B,S", [(1, 200), (2, 333)])
def test_triton_fwd_interpreted_tma_path(B, S):
    q, k, v = _qkv(B, S, 2, 64, S)
    lay = _layout(2, S, 64, 0.5, S + 1)
    cfg = FwdConfig(block_m=32, block_n=32, num_warps=4, num_stages=1, tma=True, ws=True)
    out, lse = triton_sparse_attention(q, k, v, lay, return_lse=True, config=cfg)
    torch.testing.assert_close(out, reference_attention(q, k, v, lay), atol=1e-4, rtol=0)
    torch.testing.assert_close(lse, reference_lse(q, k, lay), atol=1e-4, rtol=0)


def _wan_qk(B, S, H, D, dtype, seed):
    """A Wan q/k projection, its RMSNorm across heads (non-trivial weight) and Wan's rotary tables."""
    g = torch.Generator().manual_seed(seed)
    x = (3 * torch.randn(B, S, H * D, generator=g)).to(dtype)
    norm = torch.nn.RMSNorm(H * D, eps=1e-6).to(dtype)
    with torch.no_grad():
        norm.weight.copy_(0.5 + torch.rand(H * D, generator=g))
    angle = 40 * torch.rand(1, S, 1, D // 2, generator=g)
    return x, norm, angle.cos().repeat_interleave(2, -1), angle.sin().repeat_interleave(2, -1)


@pytest.mark.skipif(not INTERPRETED, reason="interpreter tests run where there is no GPU")
@pytest.mark.parametrize("B,S,H,D", [(1, 37, 4, 64), (2, 5, 3, 128)])
def test_norm_rope_interpreted_matches_diffusers(B, S, H, D):
    x, norm, cos, sin = _wan_qk(B, S, H, D, torch.float32, S)
    with torch.no_grad():
        got = norm_rope(x, norm, H, cos, sin, fused=True)
        want = norm_rope_reference(x, norm, H, cos, sin)
    assert got.shape == (B, S, H, D)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.skipif(not INTERPRETED, reason="interpreter tests run where there is no GPU")
def test_norm_rope_interpreted_bf16_strided_rows():
    qkv, norm, cos, sin = _wan_qk(1, 9, 2, 64, torch.bfloat16, 1)
    x = torch.cat([qkv, qkv], dim=-1)[..., :128]  # rows strided like a view of a fused QKV projection
    with torch.no_grad():
        got = norm_rope(x, norm, 2, cos.bfloat16(), sin.bfloat16(), fused=True)
        want = norm_rope_reference(x.float(), norm.float(), 2, cos, sin)
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), want, atol=0.05, rtol=0.02)  # bf16 rounding of inputs and output


def test_norm_rope_runs_diffusers_sequence_off_cuda():
    x, norm, cos, sin = _wan_qk(1, 6, 2, 32, torch.float32, 3)
    assert not fusable(x, norm)  # a CPU tensor: diffusers' own sequence, bit for bit
    torch.testing.assert_close(norm_rope(x, norm, 2, cos, sin), norm_rope_reference(x, norm, 2, cos, sin),
                               atol=0, rtol=0)


def test_cpu_bench_times_both_paths_in_turns_and_writes_the_contract(tmp_path):
    from calibstudio.kernels.bench import main

    out = tmp_path / "kernels.json"
    assert main(["--quick", "--cpu", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert {"device", "torch", "rows"} <= set(report)
    for row in report["rows"]:
        assert {"S", "H", "D", "density", "mask", "ms_ours", "ms_sdpa_dense", "speedup"} <= set(row)
        assert row["speedup"] == pytest.approx(row["ms_sdpa_dense"] / row["ms_ours"])
