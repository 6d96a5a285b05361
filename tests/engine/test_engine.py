"""The engine end to end on a tiny random Wan pipeline (CPU, offline)."""

from __future__ import annotations

import copy
import json
from dataclasses import replace

import numpy as np
import pytest

pytest.importorskip("diffusers")

import torch  # noqa: E402

from calibstudio.engine.atomic import WriteError  # noqa: E402
from calibstudio.engine.attention_hook import AttentionHook, attend_at, dense_attention  # noqa: E402
from calibstudio.engine.calibrate import CalibrationSettings, calibrate  # noqa: E402
from calibstudio.engine.export import json_safe, side_by_side, write_mp4, write_report  # noqa: E402
from calibstudio.engine.generate import GenerationSettings, compare, generate  # noqa: E402
from calibstudio.engine.models.base import ModelLoadError  # noqa: E402
from calibstudio.engine.models.tiny import save_tiny_wan, tiny_wan_pipeline  # noqa: E402
from calibstudio.engine.models.wan import WanAdapter, load_wan  # noqa: E402
from calibstudio.engine.profile import Profile, ProfileMeta, ProfileWriter  # noqa: E402
from calibstudio.engine.progress import Cancelled, Progress  # noqa: E402
from calibstudio.engine.trajectory import Trajectory  # noqa: E402
from calibstudio.kernels.attention import DENSE_ABOVE  # noqa: E402

SIZE = {"height": 64, "width": 128, "frames": 9}  # 3 x 4 x 8 = 96 video tokens
STEPS = 3
BLOCK = 16  # 6 x 6 blocks


@pytest.fixture(scope="module")
def pipe():
    return tiny_wan_pipeline(seed=0)


@pytest.fixture(scope="module")
def adapter():
    return WanAdapter()


@pytest.fixture(scope="module")
def calibrated(pipe, adapter, tmp_path_factory) -> Profile:
    settings = CalibrationSettings(**SIZE, steps=STEPS, bins=2, guidance_scale=1.0, block=BLOCK)
    out = tmp_path_factory.mktemp("profile") / "tiny.safetensors"
    return calibrate(pipe, adapter, ["a red circle moves left", "a blue square moves up"], settings, out)


def _uniform_profile(pipe, adapter, path) -> Profile:
    grid = adapter.token_grid(pipe, **SIZE)
    meta = ProfileMeta(model=adapter.identity(pipe), grid=grid, block_size=(BLOCK, BLOCK), num_steps=STEPS,
                       step_bins=((0, STEPS),), layers=2, heads=2)
    writer = ProfileWriter(meta)
    for layer in range(2):
        writer.add(0, layer, np.ones((2, meta.nq, meta.nk)))
    return Profile.open(writer.save(path))


def _settings(**changes) -> GenerationSettings:
    return GenerationSettings(**{"prompt": "a red circle moves left", **SIZE, "steps": STEPS, "seed": 3,
                                 "guidance_scale": 2.0, **changes})


def test_token_grid_matches_the_transformer(pipe, adapter):
    assert adapter.token_grid(pipe, **SIZE) == (3, 4, 8)
    with pytest.raises(ValueError, match="frames must be 4k\\+1"):
        adapter.token_grid(pipe, 64, 128, 8)


def test_a_models_dense_first_steps_get_a_step_bin_of_their_own():
    from calibstudio.engine.calibrate import step_bins

    assert step_bins(20, 4) == ((0, 5), (5, 10), (10, 15), (15, 20))
    # trained dense above a noise level: steps 0-2 do not blur the masks of the sparse steps after them
    assert step_bins(20, 4, dense_steps=3) == ((0, 3), (3, 9), (9, 14), (14, 20))
    assert step_bins(4, 4, dense_steps=3) == ((0, 1), (1, 2), (2, 3), (3, 4))  # no room: equal bins
    assert step_bins(20, 1, dense_steps=3) == ((0, 20),)


def test_same_seed_gives_the_same_dense_clip(pipe, adapter):
    a = generate(pipe, adapter, _settings()).frames
    b = generate(pipe, adapter, _settings()).frames
    assert a.shape == (9, 64, 128, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, generate(pipe, adapter, _settings(seed=4)).frames)


def test_contrast_prompts_steer_the_first_steps_only(pipe, adapter):
    """Reverse guidance (the demo model's): u + g (c - u) + w (c - r1) + w (c - r2) while the motion is decided,
    plain after."""
    plain = adapter.encode(pipe, "a red circle moves left", None, 2.0)
    r1, r2 = (adapter.encode(pipe, text, None, 1.0).prompt_embeds
              for text in ("a red circle moves right", "a red circle bounces from side to side"))
    steered = replace(plain, contrast_embeds=(r1, r2), contrast_scale=3.0, contrast_steps=1)
    latents = adapter.initial_latents(pipe, **SIZE, seed=3)
    assert [steered.passes(k) for k in range(3)] == [4, 2, 2] and plain.passes(0) == 2  # what the studio weighs
    a, b = (Trajectory(pipe, adapter, c, latents, STEPS) for c in (steered, plain))

    t = a.timesteps[0]
    c, u, back, bounce = (adapter.predict(pipe, latents, t, e) for e in (plain.prompt_embeds, plain.negative_embeds,
                                                                         r1, r2))
    scheduler = copy.deepcopy(a.scheduler)
    expected = scheduler.step(u + 2.0 * (c - u) + 3.0 * (c - back) + 3.0 * (c - bounce), t, latents,
                              return_dict=False)[0]
    a.step()
    b.step()
    torch.testing.assert_close(a.latents, expected)
    assert not torch.allclose(a.latents, b.latents)
    b.latents = a.latents.clone()  # from the same point, the steps after the first are plain ones
    while not a.done:
        a.step()
        b.step()
    torch.testing.assert_close(a.latents, b.latents, rtol=0, atol=0)


def test_sparse_with_an_all_ones_profile_equals_dense(pipe, adapter, tmp_path):
    profile = _uniform_profile(pipe, adapter, tmp_path / "ones.safetensors")
    assert profile.densities(0.9999).min() == 1.0
    dense = generate(pipe, adapter, _settings())
    # the reference backend never hands a dense layer back to the dense kernel, so the sparse path really runs
    sparse = generate(pipe, adapter, _settings(threshold=0.9999), profile=profile, backend="reference")
    assert np.abs(dense.frames.astype(int) - sparse.frames.astype(int)).max() <= 1


def test_layers_too_dense_to_gain_run_dense(pipe, adapter, calibrated, tmp_path):
    """On the CPU a layer keeping most blocks is faster dense (kernels.attention.DENSE_ABOVE): no layout for it."""
    ones = _uniform_profile(pipe, adapter, tmp_path / "ones.safetensors")
    hook = AttentionHook(adapter, pipe.transformer, mode="sparse", profile=ones, threshold=0.9999)
    assert hook.layout(0, 0, torch.device("cpu")) is None
    q = torch.randn(1, ones.meta.tokens, 2, 16)
    torch.testing.assert_close(hook.attend(0, q, q, q), dense_attention(q, q, q))
    sparse = AttentionHook(adapter, pipe.transformer, mode="sparse", profile=calibrated, threshold=0.9)
    density = float(calibrated.mask(0, 0, 0.9).mean())
    assert (sparse.layout(0, 0, torch.device("cpu")) is None) == (density > DENSE_ABOVE["cpu"])


def test_hook_removal_restores_the_processors(pipe, adapter, calibrated):
    before = [(b.attn1.processor, b.attn2.processor) for b in pipe.transformer.blocks]
    with AttentionHook(adapter, pipe.transformer, mode="sparse", profile=calibrated):
        assert all(b.attn1.processor is not p for b, (p, _) in zip(pipe.transformer.blocks, before, strict=True))
        assert all(b.attn2.processor is q for b, (_, q) in zip(pipe.transformer.blocks, before, strict=True))
    assert [(b.attn1.processor, b.attn2.processor) for b in pipe.transformer.blocks] == before
    assert not any("forward" in vars(b.ffn.net[0]) for b in pipe.transformer.blocks)


def test_hook_swaps_in_the_fused_ffn_forward_and_takes_it_back(pipe, adapter, calibrated):
    up = pipe.transformer.blocks[0].ffn.net[0]
    x = torch.randn(1, 5, up.proj.in_features)
    want = up(x)
    with AttentionHook(adapter, pipe.transformer, mode="sparse", profile=calibrated):
        outer = vars(up)["forward"]  # one GEMM with the GELU in its epilogue on CUDA, diffusers' own on the CPU
        torch.testing.assert_close(up(x), want, atol=0, rtol=0)
        with AttentionHook(adapter, pipe.transformer, mode="sparse", profile=calibrated):  # hooked twice
            assert vars(up)["forward"] is not outer
        assert vars(up)["forward"] is outer
    assert "forward" not in vars(up)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_fused_ffn_forward_matches_diffusers_on_cuda():
    from diffusers.models.activations import GELU

    from calibstudio.engine.models.wan import _gelu_in_epilogue

    up = GELU(256, 1024, approximate="tanh").cuda().bfloat16()
    x = torch.randn(2, 300, 256, device="cuda", dtype=torch.bfloat16)
    with torch.no_grad():
        want = copy.deepcopy(up).float()(x.float())
        got = _gelu_in_epilogue(up)(x)
    assert got.shape == want.shape and float((got.float() - want).norm() / want.norm()) < 1e-2
    _gelu_in_epilogue(up)(x).float().square().mean().backward()  # the epilogue op has no backward: steps aside
    assert up.proj.weight.grad is not None


def test_dense_first_steps_keep_the_sparse_clip_on_the_dense_one(pipe, adapter, calibrated):
    def run(dense_steps: int):  # the reference backend never falls back to dense at high density
        return compare(pipe, adapter, _settings(guidance_scale=1.0, threshold=0.9, dense_steps=dense_steps),
                       calibrated, backend="reference")

    all_dense = run(STEPS)
    np.testing.assert_array_equal(all_dense.sparse.frames, all_dense.dense.frames)
    assert all_dense.report()["settings"]["dense_steps"] == STEPS
    assert all_dense.report()["density"] == 1.0  # the clip's density counts its dense steps
    sparse = run(1)
    assert not np.array_equal(sparse.sparse.frames, sparse.dense.frames)  # the later steps ran sparse
    assert sparse.report()["density"] == calibrated.density(0.9, 1) > calibrated.density(0.9)
    with pytest.raises(ValueError, match="dense steps must be 0..3"):
        _settings(dense_steps=STEPS + 1)


def test_compiled_jobs_match_eager_and_compile_once(pipe, adapter, calibrated):
    """--compile: the same clips (up to float reordering), and a second job (a new hook) compiles nothing."""
    from torch._dynamo.utils import counters

    s = _settings(guidance_scale=1.0, threshold=0.9, dense_steps=1)
    eager = compare(pipe, adapter, s, calibrated, backend="cpu")
    events = []
    fast = compare(pipe, adapter, replace(s, compile=True, warmup_steps=1), calibrated, backend="cpu",
                   progress=Progress(lambda phase, step, total, _eta: events.append((phase, step, total))))
    # the compiling steps (after one dense warm-up step) show as their own phase, before the timed ones
    assert events[:4] == [("warm-up", 0, 3), ("warm-up", 1, 3), ("warm-up", 2, 3), ("warm-up", 3, 3)]
    assert events[4] == ("compare", 0, STEPS)
    for a, b in ((eager.dense, fast.dense), (eager.sparse, fast.sparse)):
        assert np.abs(a.frames.astype(int) - b.frames).max() <= 2
        assert len(b.step_ms) == STEPS  # the compiling warm-up steps are not timed
    assert fast.report()["settings"]["compile"] is True
    assert "forward" not in vars(pipe.transformer)  # the compiled forward is the job's only
    graphs = counters["stats"]["unique_graphs"]
    again = compare(pipe, adapter, replace(s, compile=True, seed=5), calibrated, backend="cpu")
    clip = generate(pipe, adapter, replace(s, compile=True, seed=6), calibrated, backend="cpu")
    assert counters["stats"]["unique_graphs"] == graphs
    assert again.sparse.frames.shape == clip.frames.shape == eager.sparse.frames.shape
    stop = Progress(lambda phase, step, _total, _eta: phase == "warm-up" and step == 1 and stop.cancel())
    with pytest.raises(Cancelled):  # a long first compile can be cancelled: the job stops at the next warm-up step
        compare(pipe, adapter, replace(s, compile=True), calibrated, backend="cpu", progress=stop)


def test_nested_hooks_take_the_calls_in_turn(pipe, adapter, calibrated):
    calls = []

    def record(name):
        return lambda q, k, v: calls.append(name) or dense_attention(q, k, v)

    q = torch.randn(1, calibrated.meta.tokens, 2, 16)
    processor = lambda: pipe.transformer.blocks[0].attn1.processor  # noqa: E731
    with AttentionHook(adapter, pipe.transformer, dense_fn=record("outer")):
        with AttentionHook(adapter, pipe.transformer, dense_fn=record("inner")):
            attend_at(processor().site, 0, q, q, q)
        attend_at(processor().site, 0, q, q, q)
    assert calls == ["inner", "outer"]


def test_calibrate_then_sparse_compare(pipe, adapter, calibrated, tmp_path):
    meta = calibrated.meta
    assert meta.grid == (3, 4, 8) and meta.nq == 6 and meta.bins == 2 and meta.layers == 2
    assert meta.calibration["prompts"][1] == "a blue square moves up"
    assert meta.calibration["passes_per_step"] == [1.0] * STEPS  # no guidance: one transformer pass a step
    assert (calibrated.retained(0.99)[0] >= 0.99 - 1e-6).all()
    steps = []
    result = compare(pipe, adapter, _settings(guidance_scale=1.0, threshold=0.9), calibrated,
                     on_step=lambda k, d, s, *_: steps.append((k, d, s)))
    assert [k for k, *_ in steps] == list(range(STEPS))
    assert len(result.dense.step_ms) == len(result.sparse.step_ms) == STEPS
    assert all(ms > 0 for ms in result.dense.step_ms + result.sparse.step_ms)
    report = result.report()
    assert report["density"] < 1.0 and report["psnr"] > 5 and 0 < report["ssim"] <= 1
    path = write_report(tmp_path / "report.json", report)
    assert path.read_text().startswith("{")


def _strict(constant: str) -> None:
    raise ValueError(f"{constant} is not JSON")


def test_identical_clips_report_psnr_as_null_not_infinity(tmp_path):
    """Other tools read these files and the CLI's output: Infinity/NaN are not JSON."""
    report = {"psnr": float("inf"), "ssim": 1.0, "per_step": [1.5, float("nan")], "nested": {"x": float("-inf")}}
    text = write_report(tmp_path / "report.json", report).read_text()
    assert json.loads(text, parse_constant=_strict) == {"psnr": None, "ssim": 1.0, "per_step": [1.5, None],
                                                       "nested": {"x": None}}
    assert json_safe((1.0, float("nan"))) == [1.0, None]


def test_profile_for_another_grid_is_refused(pipe, adapter, calibrated):
    with pytest.raises(ValueError, match="token grid"):
        generate(pipe, adapter, _settings(height=128), profile=calibrated)


def test_cancelled_calibration_writes_nothing(pipe, adapter, tmp_path):
    progress = Progress()
    calls = []

    def sink(phase, step, total, eta):
        calls.append(step)
        if step == 2:
            progress.cancel()

    progress.sink = sink
    out = tmp_path / "cancelled.safetensors"
    with pytest.raises(Cancelled):
        calibrate(pipe, adapter, ["a red circle"], CalibrationSettings(**SIZE, steps=STEPS, bins=1, block=BLOCK), out,
                  progress)
    assert calls[-1] == 2 and list(tmp_path.iterdir()) == []


def test_error_bound_raises_only_the_heads_over_it(pipe, adapter, calibrated, tmp_path):
    prompts = calibrated.meta.calibration["prompts"]

    def run(bound):
        settings = CalibrationSettings(**SIZE, steps=STEPS, bins=2, guidance_scale=1.0, block=BLOCK, error_bound=bound,
                                       error_prompts=1)
        return calibrate(pipe, adapter, prompts, settings, tmp_path / f"bound-{bound}.safetensors")

    loose, strict = run(10.0), run(1e-9)
    assert loose.meta.calibration["error_bound"]["floored_heads"] == []
    for b in range(2):
        for layer in range(2):
            np.testing.assert_array_equal(loose.mask(b, layer, 0.9), calibrated.mask(b, layer, 0.9))
    # a bound of 1e-9 tolerates no dropped block: every head runs from the first rung where its mask is whole
    assert calibrated.density(0.9) < 1.0 and strict.density(0.9) == 1.0
    floored = strict.meta.calibration["error_bound"]["floored_heads"]
    assert len(floored) == 2 * 2 * 2
    for b, layer, head, tau in floored:
        assert tau == 1.0 or calibrated.mask(b, layer, tau)[head].all()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bound-10.0.safetensors", "bound-1e-09.safetensors"]


def test_a_calibration_cancelled_in_its_error_pass_writes_nothing(pipe, adapter, tmp_path):
    progress = Progress()
    progress.sink = lambda phase, step, total, eta: progress.cancel() if step > STEPS else None
    settings = CalibrationSettings(**SIZE, steps=STEPS, bins=1, block=BLOCK, error_bound=0.05, error_prompts=1)
    with pytest.raises(Cancelled):
        calibrate(pipe, adapter, ["a red circle"], settings, tmp_path / "cancelled.safetensors", progress)
    assert list(tmp_path.iterdir()) == []


def test_calibration_settings_are_checked_before_any_work(pipe, adapter, tmp_path):
    with pytest.raises(ValueError, match="bound must be positive"):
        calibrate(pipe, adapter, ["a red circle"], CalibrationSettings(**SIZE, steps=STEPS, error_bound=-1.0),
                  tmp_path / "p.safetensors")
    with pytest.raises(WriteError, match="does not exist; create it first"):
        calibrate(pipe, adapter, ["a red circle"], CalibrationSettings(**SIZE, steps=STEPS),
                  tmp_path / "no" / "p.safetensors")


def test_mp4_export_decodes_to_the_right_frames(pipe, adapter, tmp_path):
    import imageio.v3 as iio

    clip = generate(pipe, adapter, _settings()).frames
    path = write_mp4(tmp_path / "both.mp4", side_by_side(clip, clip))
    frames = iio.imread(path, plugin="FFMPEG")
    assert frames.shape == (9, 64, 2 * 128 + 8, 3)


def test_wan_folder_round_trip_and_missing_parts(tmp_path):
    folder = save_tiny_wan(tmp_path / "wan")
    pipe = load_wan(folder)
    assert WanAdapter().identity(pipe)["class"] == "WanTransformer3DModel"
    for part in ("vae/config.json", "model_index.json"):
        (folder / part).rename(folder / (part + ".gone"))
        with pytest.raises(ModelLoadError, match=part.replace(".", "\\.")):
            load_wan(folder)
        (folder / (part + ".gone")).rename(folder / part)
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_wan(tmp_path / "nowhere")


def test_apply_profile_makes_a_plain_pipeline_call_sparse_and_comes_off(pipe, calibrated):
    import torch

    import calibstudio

    def run():
        out = pipe("a red circle moves left", height=64, width=128, num_frames=9, num_inference_steps=STEPS,
                   guidance_scale=1.0,
                   output_type="latent", generator=torch.Generator().manual_seed(1)).frames
        return out.clone()

    dense = run()
    before = [b.attn1.processor for b in pipe.transformer.blocks]
    # reference backend: the tiny model's dense-ish layers would otherwise run dense on the CPU (DENSE_ABOVE)
    with calibstudio.apply_profile(pipe, calibrated, threshold=0.9, backend="reference") as hook:
        sparse = run()
        assert set(hook._layouts) == {(0, 0), (0, 1), (1, 0), (1, 1)}  # both bins used, layouts built once
    assert [b.attn1.processor for b in pipe.transformer.blocks] == before
    assert not torch.equal(dense, sparse)
    assert torch.equal(run(), dense)
    with calibstudio.apply_profile(pipe, calibrated), pytest.raises(ValueError, match="video tokens"):
        pipe("x", height=128, width=128, num_frames=9, num_inference_steps=1, output_type="latent")


def _own_pipeline(device: str = "cpu"):
    """A tiny pipeline of the test's own (it is compiled or fused in place: not the module's shared one) and
    a call that generates its clip's latents from a fixed seed."""
    own = tiny_wan_pipeline(seed=0).to(device)

    def run():
        return own("a red circle moves left", height=64, width=128, num_frames=9, num_inference_steps=STEPS,
                   guidance_scale=1.0, output_type="latent",
                   generator=torch.Generator(device).manual_seed(1)).frames

    return own, run


def test_the_hook_op_is_left_out_of_cuda_graphs():
    """A captured graph would replay the first step's layout for every step; inductor skips ops so tagged."""
    assert torch.Tag.cudagraph_unsafe in torch.ops.calibstudio.hooked_attention.default.tags


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_apply_profile_under_cuda_graphs_uses_every_steps_layout(calibrated):
    """``compile(mode="reduce-overhead")`` (CUDA graphs) with the hook on gives the eager sparse clip."""
    import calibstudio

    own, run = _own_pipeline("cuda")

    with calibstudio.apply_profile(own, calibrated, threshold=0.9, backend="reference"):
        eager = run()
    own.transformer.compile(mode="reduce-overhead")
    with calibstudio.apply_profile(own, calibrated, threshold=0.9, backend="reference") as hook:
        run()  # captures
        torch.testing.assert_close(run(), eager, atol=1e-3, rtol=0)
        assert set(hook._layouts) == {(0, 0), (0, 1), (1, 0), (1, 1)}


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_calibration_on_cuda_records_the_cpu_profile(adapter, calibrated, tmp_path):
    """On CUDA record mode takes the output and the row LSE from our Triton dense forward and the mass from the
    Triton kernel; on the CPU from SDPA's flash kernel and torch: the same profile either way."""
    settings = CalibrationSettings(**SIZE, steps=STEPS, bins=2, guidance_scale=1.0, block=BLOCK)
    own, _ = _own_pipeline("cuda")
    with calibrate(own, adapter, calibrated.meta.calibration["prompts"], settings, tmp_path / "gpu.safetensors") as p:
        for tau in (0.9, 0.99):
            np.testing.assert_allclose(p.densities(tau), calibrated.densities(tau), atol=0.05)
            np.testing.assert_allclose(p.retained(tau)[0], calibrated.retained(tau)[0], atol=2e-3)


def test_apply_profile_under_an_in_place_compiled_transformer(calibrated):
    """README: ``pipe.transformer.compile()`` with the hook on gives the eager sparse clip, one graph for all."""
    from torch._dynamo.utils import counters

    import calibstudio

    own, run = _own_pipeline()

    with calibstudio.apply_profile(own, calibrated, threshold=0.9, backend="reference"):
        eager = run()
    own.transformer.compile()
    with calibstudio.apply_profile(own, calibrated, threshold=0.9, backend="reference") as hook:
        torch.testing.assert_close(run(), eager, atol=1e-4, rtol=0)
        assert set(hook._layouts) == {(0, 0), (0, 1), (1, 0), (1, 1)}  # the step still picks the bin
    graphs = counters["stats"]["unique_graphs"]
    with calibstudio.apply_profile(own, calibrated, threshold=0.9, backend="reference"):
        run()
    assert counters["stats"]["unique_graphs"] == graphs


def test_apply_profile_with_fused_qkv_projections_gives_the_same_sparse_clip(calibrated):
    """README: diffusers' ``transformer.fuse_qkv_projections()`` (Q, K, V as one GEMM) works with the hook on."""
    import calibstudio

    own, run = _own_pipeline()

    with calibstudio.apply_profile(own, calibrated, threshold=0.9, backend="reference"):
        separate = run()
    own.transformer.fuse_qkv_projections()
    fused_calls = []
    for block in own.transformer.blocks:
        block.attn1.to_qkv.register_forward_hook(lambda *_: fused_calls.append(1))
    with calibstudio.apply_profile(own, calibrated, threshold=0.9, backend="reference") as hook:
        torch.testing.assert_close(run(), separate, atol=1e-4, rtol=0)
        assert set(hook._layouts) == {(0, 0), (0, 1), (1, 0), (1, 1)}
    assert fused_calls  # the hook's processor took the one-GEMM projection
