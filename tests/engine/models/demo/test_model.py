"""The bundled demo model: shipped weights load, words it never saw are harmless, clips follow the prompt."""

from __future__ import annotations

import copy
import json
import shutil

import numpy as np
import pytest
import torch

from calibstudio.app.cost_model import estimate
from calibstudio.engine.models.base import ModelLoadError
from calibstudio.engine.models.demo.adherence import check_clip
from calibstudio.engine.models.demo.folder import CONFIG, WEIGHTS
from calibstudio.engine.models.demo.model import DemoAdapter, default_folder, load_demo, save_demo
from calibstudio.engine.models.demo.text import UNK, WordEncoder, grammar_vocabulary, tokenize
from calibstudio.engine.models.registry import load_model
from calibstudio.engine.profile import Profile


@pytest.fixture(scope="module")
def demo():
    return load_model("demo", "cpu")


def test_shipped_weights_are_small_and_load_as_the_default_model(demo):
    assert (default_folder() / WEIGHTS).stat().st_size <= 25 * 2**20
    assert demo.adapter.identity(demo.pipe)["name"] == "calibstudio-demo"
    grid = demo.adapter.token_grid(demo.pipe, demo.defaults["height"], demo.defaults["width"], demo.defaults["frames"])
    assert np.prod(grid) >= 2048  # the default clip's attention is large enough for sparsity to pay
    # the shipped profile records the model's width, so the studio predicts its speed with the demo's own
    # attention share (Wan-14B's width would predict ~1.1x where it measures ~1.6x)
    with Profile.open(demo.profile) as profile:
        assert estimate(profile.meta.tokens, 0.3, profile.meta.model).width == 256  # 4 heads x 64


def test_unknown_words_map_to_unk_and_never_fail(demo):
    vocab = grammar_vocabulary()
    ids = tokenize(["a zorblax circle moves left", "", "CIRCLE!!"], vocab)
    assert ids[0, 1] == vocab.index(UNK) and ids[0, 2] == vocab.index("circle")
    assert ids[1].eq(0).all() and ids[2, 0] == vocab.index("circle")
    embeds = demo.pipe.encode_text(["a zorblax qwerty moves left", ""])
    assert torch.isfinite(embeds).all()
    assert embeds[1].abs().max() == 0  # the empty prompt is the unconditional embedding


def test_padding_positions_are_zero_as_in_wan():
    encoder = WordEncoder(10).eval()
    out = encoder(torch.tensor([[3, 4, 0, 0]]))
    assert out[0, 2:].abs().max() == 0 and out[0, :2].abs().max() > 0


def test_impossible_sizes_are_refused_with_the_rule(demo):
    with pytest.raises(ValueError, match="multiple"):
        demo.adapter.token_grid(demo.pipe, 62, 64, 16)
    with pytest.raises(ValueError, match="frames"):
        demo.adapter.initial_latents(demo.pipe, 64, 64, 15, seed=0)


def test_missing_or_damaged_weights_give_one_clear_error(tmp_path):
    with pytest.raises(ModelLoadError, match="lacks config.json, model.safetensors"):
        load_demo(tmp_path)
    shutil.copy(default_folder() / CONFIG, tmp_path / CONFIG)
    (tmp_path / WEIGHTS).write_bytes(b"not a safetensors file")
    with pytest.raises(ModelLoadError, match="damaged"):
        load_demo(tmp_path)


def test_save_and_load_round_trip(demo, tmp_path):
    save_demo(demo.pipe, tmp_path, {"note": "test"})
    again = load_demo(tmp_path)
    assert json.loads((tmp_path / CONFIG).read_text())["training"] == {"note": "test"}
    for (name, a), b in zip(demo.pipe.state_dict().items(), again.state_dict().values(), strict=True):
        assert torch.equal(a.half().float(), b), name  # shipped weights are fp16 already


def test_a_folder_names_its_sampler_and_shift_and_a_wrong_one_is_one_clear_error(demo, tmp_path):
    shipped = demo.pipe.scheduler
    assert (type(shipped).__name__, shipped.config.shift) == ("FlowMatchEulerDiscreteScheduler", 2)
    save_demo(demo.pipe, tmp_path)
    config = json.loads((tmp_path / CONFIG).read_text())
    (tmp_path / CONFIG).write_text(json.dumps({**config, "sampler": "unipc", "scheduler_shift": 5.0}))
    pipe = load_demo(tmp_path)
    assert type(pipe.scheduler).__name__ == "UniPCMultistepScheduler" and pipe.scheduler.config.flow_shift == 5.0
    save_demo(pipe, tmp_path / "again")
    again = json.loads((tmp_path / "again" / CONFIG).read_text())
    assert (again["sampler"], again["scheduler_shift"]) == ("unipc", 5.0)
    for wrong, message in (({"sampler": "heun"}, "unknown sampler 'heun'"),
                           ({"scheduler_shift": 0}, "scheduler shift must be positive"),
                           ({"scheduler_shift": None}, "is damaged")):
        (tmp_path / CONFIG).write_text(json.dumps({**config, **wrong}))
        with pytest.raises(ModelLoadError, match=message):
            load_demo(tmp_path)


@pytest.mark.slow
def test_a_generated_clip_follows_its_caption(demo):
    """Colours, shape and motion of a clip from the shipped weights (the model card's scores, in one clip)."""
    from calibstudio.engine.generate import GenerationSettings, generate

    caption = "a yellow circle moves right on a blue background"
    settings = GenerationSettings(prompt=caption, height=64, width=64, frames=16, steps=12, seed=3,
                                  guidance_scale=demo.defaults["guidance_scale"])
    clip = generate(demo.pipe, demo.adapter, settings)
    assert clip.frames.shape == (16, 64, 64, 3) and clip.frames.dtype == np.uint8
    result = check_clip(clip.frames, caption, (0, 255))
    assert result.background_ok and result.color_ok and result.shape_ok and result.direction_ok, result.reading


def test_the_shipped_model_samples_with_one_pass_a_step(demo):
    """v5 is distilled from v4's guided sampler: the caption alone, one transformer pass a step (docs/demo-model/
    distill-experiment.json), so a clip costs 20 passes instead of v4's 40-50."""
    adapter, defaults = DemoAdapter(), demo.pipe.defaults
    assert (defaults["guidance_scale"], defaults["reverse_guidance_steps"]) == (1.0, 0)
    conditioning = adapter.encode(demo.pipe, "a red ball floats up against a blue background", None,
                                  defaults["guidance_scale"])
    assert [conditioning.passes(step) for step in range(defaults["steps"])] == [1] * defaults["steps"]


def test_reverse_guidance_steers_away_from_the_motion_misread(demo):
    """A model with reverse guidance on (v4, the teacher of the shipped v5) steers away from the motion played
    backwards and, for a straight move, there and back; a bounce (the same backwards) or a model without it gets
    none."""
    adapter = DemoAdapter()
    pipe = copy.copy(demo.pipe)
    pipe.defaults = {**demo.pipe.defaults, "reverse_guidance": 4.0, "reverse_guidance_steps": 5}
    up = adapter.encode(pipe, "a red ball floats up against a blue background", None, 2.0)
    assert (up.contrast_scale, up.contrast_steps) == (4.0, 5)
    expected = pipe.encode_text(["a red circle moves down on a blue background",
                                 "a red circle bounces up and down on a blue background"])
    assert len(up.contrast_embeds) == 2
    torch.testing.assert_close(torch.cat(up.contrast_embeds), expected)
    shrink = adapter.encode(pipe, "a red ball shrinks on a blue background", None, 2.0)
    torch.testing.assert_close(shrink.contrast_embeds, (pipe.encode_text(["a red circle grows on a blue background"]),))
    bounce = adapter.encode(pipe, "a red ball bounces up and down on a blue background", None, 2.0)
    assert bounce.contrast_embeds == ()
    plain = copy.copy(pipe)
    plain.defaults = {**pipe.defaults, "reverse_guidance": 0.0}
    assert adapter.encode(plain, "a red ball floats up against a blue background", None, 2.0).contrast_embeds == ()


def test_preview_is_the_middle_frame_in_true_colour(demo):
    latents = torch.full((1, 3, 16, 64, 64), -1.0)
    latents[:, 2, 8] = 1.0  # frame 8 pure blue
    image = DemoAdapter().preview(latents)
    assert image.shape == (64, 64, 3) and (image[..., 2] == 255).all() and (image[..., 0] == 0).all()


def test_training_checkpoints_resumes_and_exports_a_loadable_model(tmp_path):
    from calibstudio.engine.models.demo.train import parse_args, train

    common = ["--out", str(tmp_path), "--batch", "1", "--workers", "0", "--log-every", "1", "--eval-steps", "1"]
    first = train(parse_args([*common, "--steps", "3", "--max-minutes", "0", "--eval-clips", "0"]))
    assert first["step"] == 1  # --max-minutes 0 stops after one step, with a checkpoint
    assert not (tmp_path / "demo_model").exists()  # unfinished runs export nothing unless asked
    result = train(parse_args([*common, "--steps", "3", "--resume", "--eval-clips", "1"]))
    assert result["step"] == 3 and set(result["held_out_adherence"]) == {"color", "shape", "direction"}
    assert result["held_out_teleports"] in ("0/1", "1/1")
    log = [json.loads(line) for line in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert [row["step"] for row in log] == [1, 2, 3] and all(np.isfinite(row["loss"]) for row in log)
    assert json.loads((tmp_path / "state.json").read_text())["step"] == 3
    assert load_demo(tmp_path / "demo_model").transformer.config.num_layers >= 1


def test_fine_tuning_starts_from_a_saved_model_and_records_it(tmp_path):
    from calibstudio.engine.models.demo.train import parse_args, train

    train(parse_args(["--out", str(tmp_path), "--batch", "1", "--workers", "0", "--steps", "1", "--lr", "0",
                      "--eval-clips", "0", "--init", str(default_folder())]))
    tuned = load_demo(tmp_path / "demo_model")
    shipped = load_demo().state_dict()
    assert all(torch.equal(v, shipped[k]) for k, v in tuned.state_dict().items())  # lr 0: the shipped weights
    exported = json.loads((tmp_path / "demo_model" / "config.json").read_text())
    shipped_config = json.loads((default_folder() / "config.json").read_text())
    assert exported["training"]["init"]["step"] == shipped_config["training"]["step"]
    # the inference defaults carry over (guidance, threshold, calibration recipe); dense steps follow the run's
    # --local-below (none given: every level, so none dense)
    kept = ("guidance_scale", "threshold", "error_bound", "calibration_prompts", "frames")
    assert {k: exported["defaults"][k] for k in kept} == {k: shipped_config["defaults"][k] for k in kept}
    assert exported["defaults"]["dense_steps"] == 0


def test_motion_weights_are_checked_on_the_command_line_and_recorded_by_the_run(tmp_path, capsys):
    from calibstudio.engine.models.demo.train import parse_args, train

    for bad in ("spin=2", "recolor=0", "recolor=x"):
        with pytest.raises(SystemExit):
            parse_args(["--motion-weight", bad])
        assert "--motion-weight" in capsys.readouterr().err
    args = parse_args(["--out", str(tmp_path), "--batch", "1", "--workers", "0", "--steps", "1", "--eval-clips", "0",
                       "--motion-weight", "recolor=3", "--motion-weight", "up=1.5"])
    train(args)
    exported = json.loads((tmp_path / "demo_model" / "config.json").read_text())
    assert exported["training"]["motion_weights"] == {"recolor": 3.0, "up": 1.5}


def test_a_larger_noise_shift_trains_the_noisiest_levels_more_and_a_resume_keeps_it(tmp_path, capsys):
    from calibstudio.engine.models.demo.train import noise_levels, parse_args, train

    u = torch.linspace(0, 1, 10_001)
    assert noise_levels(u, 1.0).equal(u) and noise_levels(u, 4.0)[[0, -1]].tolist() == [0.0, 1.0]
    share = [(noise_levels(u, shift) >= 0.85).float().mean().item() for shift in (2.0, 4.0)]
    assert 0.25 < share[0] < 0.27 and 0.40 < share[1] < 0.42  # of the examples at the 5 dense steps' levels
    for bad in ("0", "-2", "x", "inf"):
        with pytest.raises(SystemExit):
            parse_args(["--noise-shift", bad])
        assert "--noise-shift" in capsys.readouterr().err
    common = ["--out", str(tmp_path), "--batch", "1", "--workers", "0", "--eval-clips", "0", "--frames", "8"]
    train(parse_args([*common, "--steps", "1", "--noise-shift", "4"]))
    train(parse_args([*common, "--steps", "2", "--resume", "--export-partial"]))
    assert json.loads((tmp_path / "demo_model" / "config.json").read_text())["training"]["noise_shift"] == 4.0
    train(parse_args(["--out", str(tmp_path / "plain"), *common[2:], "--steps", "1"]))
    assert json.loads((tmp_path / "plain" / "demo_model" / "config.json").read_text())["training"]["noise_shift"] == 2.0


def test_far_locality_windows_are_checked_on_the_command_line_and_kept_by_a_resume(tmp_path, capsys):
    from calibstudio.engine.models.demo.train import parse_args, train

    for bad in ("0,4", "4,x", ""):
        with pytest.raises(SystemExit):
            parse_args(["--locality-far", bad])
        assert "--locality-far" in capsys.readouterr().err
    common = ["--out", str(tmp_path), "--batch", "1", "--workers", "0", "--eval-clips", "0", "--frames", "8"]
    train(parse_args([*common, "--steps", "1", "--locality", "0.05", "--locality-far", "2"]))
    train(parse_args([*common, "--steps", "2", "--resume", "--export-partial"]))
    exported = json.loads((tmp_path / "demo_model" / "config.json").read_text())
    assert exported["training"]["locality_far"] == [2] and exported["training"]["locality"] == 0.05


def test_fine_tuning_from_a_folder_without_a_model_is_one_clear_error(tmp_path, capsys):
    from calibstudio.engine.models.demo.train import main

    assert main(["--out", str(tmp_path / "run"), "--workers", "0", "--init", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the demo model in") and "lacks config.json, model.safetensors" in err


def test_a_trained_demo_folder_loads_as_a_model_with_its_own_defaults(demo, tmp_path, monkeypatch):
    from calibstudio.app.job_request import DEMO_RULE, size_rule
    from calibstudio.engine.models.demo.folder import PROFILE, is_demo_folder, saved_defaults
    from calibstudio.engine.models.demo.model import DemoAdapter

    # its own recommendation and error bound
    monkeypatch.setattr(demo.pipe, "defaults", {**demo.pipe.defaults, "threshold": 0.95, "error_bound": 0.05})
    save_demo(demo.pipe, tmp_path)
    assert is_demo_folder(tmp_path) and size_rule(str(tmp_path)) is DEMO_RULE  # the studio checks sizes the same way
    assert saved_defaults(tmp_path)["threshold"] == 0.95  # what the studio's form reads before the engine loads it
    loaded = load_model(str(tmp_path), "cpu")
    assert isinstance(loaded.adapter, DemoAdapter)
    assert loaded.threshold(None) == 0.95 and loaded.defaults["frames"] == demo.defaults["frames"]
    assert loaded.error_bound(None) == 0.05 and loaded.error_bound(0.1) == 0.1 and loaded.error_bound(0) is None
    assert loaded.profile == tmp_path / PROFILE and loaded.available_profile is None  # none calibrated yet
    (tmp_path / WEIGHTS).unlink()
    with pytest.raises(ModelLoadError, match="lacks model.safetensors; export it again"):
        load_model(str(tmp_path), "cpu")
    (tmp_path / CONFIG).write_text("{not json")
    assert saved_defaults(tmp_path) == {}  # the form keeps its own values; loading the model names the problem


def test_training_at_another_clip_length_exports_a_model_of_that_length(tmp_path, capsys):
    from calibstudio.engine.models.demo.train import main, parse_args, train

    common = ["--out", str(tmp_path), "--batch", "1", "--workers", "0", "--eval-steps", "1"]
    result = train(parse_args([*common, "--steps", "1", "--frames", "4", "--eval-clips", "1"]))
    assert set(result["held_out_adherence"]) == {"color", "shape", "direction"}  # scored on 4-frame clips
    model = load_demo(tmp_path / "demo_model")
    assert model.defaults["frames"] == 4  # jobs on the exported model default to the length it learned
    assert json.loads((tmp_path / "demo_model" / "config.json").read_text())["training"]["frames"] == 4
    assert main([*common, "--steps", "2", "--resume", "--frames", "6"]) == 2  # a run keeps its clip length
    assert "trains 4-frame clips" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # the patch takes frames in pairs
        parse_args(["--frames", "5"])


def test_a_deepened_model_predicts_the_same_and_its_new_blocks_learn(demo):
    from calibstudio.engine.models.demo.model import DemoPipeline

    pipe = DemoPipeline.fresh(0)
    pipe.load_state_dict(demo.pipe.state_dict())
    x, t = torch.randn(1, 3, 4, 16, 16), torch.tensor([700.0])
    text = pipe.encode_text(["a red circle moves left on a black background"])

    def predict():
        return pipe.transformer(hidden_states=x, timestep=t, encoder_hidden_states=text, return_dict=False)[0]

    with torch.no_grad():
        before = predict()
    pipe.deepen(8)
    assert pipe.transformer.config.num_layers == 8
    with torch.no_grad():
        assert torch.allclose(predict(), before, atol=1e-6)  # new blocks start as identities
    predict().square().mean().backward()
    for new in (2, 6):  # 6 -> 8 blocks: the new ones sit between the old
        out = pipe.transformer.blocks[new].ffn.net[2].weight
        assert out.abs().max() == 0 and out.grad.abs().max() > 0  # zero, but moving from the first step
    with pytest.raises(ValueError, match="can only grow"):
        pipe.deepen(4)


def test_training_grows_a_model_from_its_init_and_a_resume_keeps_the_size(tmp_path, capsys):
    from calibstudio.engine.models.demo.train import main, parse_args, train

    common = ["--out", str(tmp_path), "--batch", "1", "--workers", "0", "--eval-clips", "0", "--frames", "4"]
    train(parse_args([*common, "--steps", "1", "--lr", "0", "--init", str(default_folder()), "--layers", "8"]))
    grown = load_demo(tmp_path / "demo_model")
    assert grown.transformer.config.num_layers == 8
    assert json.loads((tmp_path / "demo_model" / "config.json").read_text())["transformer"]["num_layers"] == 8
    shipped = load_demo().state_dict()
    assert torch.equal(grown.state_dict()["transformer.blocks.7.ffn.net.2.weight"],
                       shipped["transformer.blocks.5.ffn.net.2.weight"])  # the last block stays last
    assert main([*common, "--steps", "2", "--resume", "--layers", "6"]) == 2
    assert "trains a model of 8 blocks" in capsys.readouterr().err
    assert main([*common, "--steps", "2", "--resume"]) == 0
    assert main(["--out", str(tmp_path / "small"), "--workers", "0", "--init", str(default_folder()),
                 "--layers", "4"]) == 2
    assert "can only grow" in capsys.readouterr().err


def test_a_model_with_the_clock_reads_where_each_pixel_is_and_generates(demo):
    from calibstudio.engine.models.demo.model import DemoPipeline
    from calibstudio.engine.models.demo.train import sample

    pipe = DemoPipeline.fresh(0)
    pipe.load_state_dict(demo.pipe.state_dict())
    assert not pipe.has_clock and pipe.model_input(torch.zeros(1, 3, 4, 8, 8)).shape[1] == 3
    before = pipe.transformer.patch_embedding.weight.detach().clone()
    pipe.add_clock()
    assert pipe.has_clock and torch.equal(pipe.transformer.patch_embedding.weight[:, :3], before)  # colours kept
    x = pipe.model_input(torch.zeros(2, 3, 4, 8, 8))
    assert x.shape == (2, 6, 4, 8, 8)
    assert x[0, 3, :, 0, 0].tolist() == pytest.approx([-1, -1 / 3, 1 / 3, 1])  # frame: -1 at the start, 1 at the end
    assert x[1, 4, 0, :, 0].min() == -1 and x[1, 5, 0, 0, :].max() == 1  # row and column
    clips = sample(pipe, ["a red circle moves left on a black background"], seed=0, steps=1, guidance=2.0, frames=4)
    assert clips.shape == (1, 4, 64, 64, 3)


def test_training_adds_the_clock_to_its_init_and_a_resume_keeps_it(tmp_path, capsys):
    from calibstudio.engine.models.demo.train import main, parse_args, train

    common = ["--out", str(tmp_path), "--batch", "1", "--workers", "0", "--eval-clips", "0", "--frames", "4"]
    train(parse_args([*common, "--steps", "1", "--init", str(default_folder()), "--clock"]))
    model = load_demo(tmp_path / "demo_model")
    assert model.has_clock and model.transformer.config.in_channels == 6
    assert json.loads((tmp_path / "demo_model" / "config.json").read_text())["training"]["clock"] is True
    assert main([*common, "--steps", "2", "--resume"]) == 0  # keeps reading the clock
    assert load_demo(tmp_path / "demo_model").has_clock
    plain = tmp_path / "plain"
    train(parse_args([*common[2:], "--out", str(plain), "--steps", "1"]))
    assert main([*common[2:], "--out", str(plain), "--steps", "2", "--resume", "--clock"]) == 2
    assert "without the clock channels" in capsys.readouterr().err
