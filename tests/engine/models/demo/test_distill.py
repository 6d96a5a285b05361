"""Guidance distillation: the teacher's target is the sampler's own guided step; a run exports a one-pass model."""

from __future__ import annotations

import json

import pytest
import torch

from calibstudio.engine.models.demo.distill import GuidanceRule, GuidanceTeacher, contrast_ids
from calibstudio.engine.models.demo.folder import CONFIG, WEIGHTS
from calibstudio.engine.models.demo.model import DemoAdapter, DemoPipeline, default_folder, load_demo, save_demo
from calibstudio.engine.models.demo.text import tokenize
from calibstudio.engine.trajectory import Trajectory

CAPTION = "a red circle moves left on a blue background"  # two contrasts: played backwards, there and back


def guided(pipe: DemoPipeline) -> DemoPipeline:
    """``pipe`` with v4's sampler rule (the teacher of the shipped v5): guidance 2, reverse guidance 4 in 5 steps."""
    pipe.defaults.update(guidance_scale=2.0, reverse_guidance=4.0, reverse_guidance_steps=5)
    return pipe


@pytest.fixture(scope="module")
def teacher() -> DemoPipeline:
    """A one-block model with the shipped kind of sampler rule: guidance 2, reverse guidance 4 in 2 of 6 steps."""
    pipe = DemoPipeline.fresh(seed=3, layers=1)
    pipe.defaults.update(steps=6, guidance_scale=2.0, reverse_guidance=4.0, reverse_guidance_steps=2)
    with torch.no_grad():  # random outputs that depend on the caption (a fresh proj_out is nearly silent)
        for p in pipe.transformer.proj_out.parameters():
            p.normal_(0, 0.5)
    return pipe


def test_the_rule_is_the_teachers_defaults_and_its_contrast_levels_those_of_its_first_steps(teacher):
    rule = GuidanceRule.of(teacher)
    scheduler = teacher.scheduler
    scheduler.set_timesteps(6)
    sigmas = scheduler.sigmas.tolist()
    assert rule.guidance == 2.0 and rule.contrast_scale == 4.0
    assert sigmas[2] < rule.contrast_above < sigmas[1]  # steps 0 and 1 steer, step 2 does not
    v4 = GuidanceRule.of(guided(load_demo()))
    assert 0.857 < v4.contrast_above < 0.889  # 20 Euler steps at shift 2, the first 5 steer
    assert GuidanceRule.of(load_demo()).guidance == 1.0  # the shipped v5 is a distilled student itself
    plain = DemoPipeline.fresh(layers=1)
    assert GuidanceRule.of(plain).contrast_above == float("inf")  # no reverse guidance: no contrast levels
    for r in (rule, GuidanceRule.of(plain)):  # the run state and the exported record are strict JSON
        assert GuidanceRule.from_dict(json.loads(json.dumps(r.as_dict(), allow_nan=False))) == r


def test_the_teacher_target_is_the_velocity_of_the_samplers_guided_step(teacher):
    adapter = DemoAdapter()
    conditioning = adapter.encode(teacher, CAPTION, None, 2.0)
    assert len(conditioning.contrast_embeds) == 2
    guide = GuidanceTeacher(teacher)
    latents = adapter.initial_latents(teacher, 32, 32, 8, seed=0)
    trajectory = Trajectory(teacher, adapter, conditioning, latents, steps=6)
    sigmas = trajectory.scheduler.sigmas
    words, contrasts = tokenize([CAPTION], teacher.vocab), contrast_ids(CAPTION, teacher.vocab)[None]
    gaps = []
    for step in range(3):  # two steering steps, then one with guidance alone
        before = trajectory.latents.clone()
        trajectory.step()
        velocity = (trajectory.latents - before) / (sigmas[step + 1] - sigmas[step])  # Euler: x' = x + dsigma v
        target = guide.velocity(before, sigmas[step : step + 1], words, contrasts)
        torch.testing.assert_close(target, velocity, rtol=1e-3, atol=1e-3)
        plain = GuidanceTeacher(teacher, GuidanceRule(2.0, 0.0, guide.rule.contrast_above))
        gaps.append((plain.velocity(before, sigmas[step : step + 1], words, contrasts) - target).abs().max().item())
    assert gaps[0] > 1e-2 and gaps[1] > 1e-2 and gaps[2] == 0.0  # the contrast terms count where they should


def test_a_caption_without_contrasts_steers_nowhere():
    vocab = load_demo().vocab
    bounce = "a red circle bounces left and right on a blue background"
    assert contrast_ids(bounce, vocab).tolist() == contrast_ids(bounce, vocab)[:1].repeat(2, 1).tolist()
    assert len({tuple(row) for row in contrast_ids(CAPTION, vocab).tolist()}) == 2


def test_distilling_exports_a_one_pass_model_and_a_resume_keeps_its_teacher(tmp_path, capsys):
    from calibstudio.engine.models.demo.train import main, parse_args, train

    folder = str(save_demo(guided(load_demo()), tmp_path / "v4"))
    common = ["--out", str(tmp_path / "run"), "--batch", "2", "--workers", "0", "--eval-clips", "0", "--frames", "8",
              "--consistency", "1", "--local-below", "0.85"]
    first = train(parse_args([*common, "--steps", "2", "--max-minutes", "0", "--distill", folder]))
    assert first["step"] == 1
    assert main([*common, "--steps", "2", "--resume", "--distill", str(default_folder())]) == 2
    assert "does not distill" in capsys.readouterr().err
    weights = tmp_path / "v4" / WEIGHTS
    kept = weights.read_bytes()
    weights.write_bytes(kept[:-2] + bytes(2))  # another model in the teacher's folder
    assert main([*common, "--steps", "2", "--resume"]) == 2
    assert "is not the model" in capsys.readouterr().err
    weights.write_bytes(kept)
    train(parse_args([*common, "--steps", "2", "--resume"]))
    exported = json.loads((tmp_path / "run" / "demo_model" / CONFIG).read_text())
    distilled = exported["training"]["distill"]
    assert distilled["teacher"] == folder and distilled["guidance"] == 2.0
    assert distilled["contrast_scale"] == 4.0 and 0.857 < distilled["contrast_above"] < 0.889
    assert exported["training"]["init"]["folder"] == folder  # the student started as its teacher
    student = load_demo(tmp_path / "run" / "demo_model")
    assert (student.defaults["guidance_scale"], student.defaults["reverse_guidance_steps"]) == (1.0, 0)
    assert student.defaults["dense_steps"] == 5  # still dense where its teacher's attention is not local
    conditioning = DemoAdapter().encode(student, CAPTION, None, student.defaults["guidance_scale"])
    assert [conditioning.passes(step) for step in range(20)] == [1] * 20
