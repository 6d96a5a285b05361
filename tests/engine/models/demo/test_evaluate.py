"""``calibstudio eval`` and ``compare`` on the demo model, as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from calibstudio.engine.models.demo.model import load_demo


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "calibstudio", *args], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def short_profile(tmp_path_factory):
    """A 4-step demo-model profile on one prompt (the shipped one is for 20 steps: too slow for a test)."""
    folder = tmp_path_factory.mktemp("eval")
    prompts = folder / "prompts.txt"
    prompts.write_text("a red circle moves left on a blue background\n")
    profile = folder / "demo-4.safetensors"
    result = run("calibrate", "--prompts", str(prompts), "--steps", "4", "--bins", "2", "--error-bound", "0",
                 "--out", str(profile))
    assert result.returncode == 0, result.stderr
    return profile, prompts


@pytest.mark.slow
def test_eval_prints_and_writes_the_documented_json(short_profile, tmp_path):
    profile, prompts = short_profile
    out = tmp_path / "eval.json"
    result = run("eval", str(prompts), "--profile", str(profile), "--threshold", "0.95", "--guidance-scale", "2.5",
                 "--json", str(out))
    assert result.returncode == 0, result.stderr
    assert "dense:" in result.stdout and "PSNR" in result.stdout
    report = json.loads(out.read_text())
    assert {"dense", "sparse", "psnr", "ssim", "speedup", "threshold", "density"} <= set(report)
    for name in ("dense", "sparse"):
        assert set(report[name]) == {"color", "shape", "direction"}
        assert all(0.0 <= v <= 1.0 for v in report[name].values())
    assert report["threshold"] == 0.95 and 0.0 < report["density"] <= 1.0 and report["guidance_scale"] == 2.5
    assert report["steps"] == 4 and report["sampler"] == type(load_demo().scheduler).__name__  # the profile's steps
    assert (report["reverse_guidance"], report["reverse_guidance_steps"]) == (0.0, 0)  # distilled: none to add
    assert report["speedup"] > 0 and -1.0 <= report["ssim"] <= 1.0 and report["psnr"] > 10
    assert report["device"].startswith("cpu:") and report["torch"]  # where the numbers were measured
    (row,) = report["per_prompt"]  # each caption's verdicts and what the checker read, to look at a miss
    assert row["prompt"] == prompts.read_text().strip() and row["seed"] == 0
    for name in ("dense", "sparse"):
        assert report[name] == {k: float(row[name][k]) for k in ("color", "shape", "direction")}
        assert isinstance(row[name]["read"], str) and row[name]["read"]
        (tally,) = report["direction_by_motion"][name].values()  # one caption, one motion asked for
        assert tally == f"{int(row[name]['direction'])}/1"


def test_eval_lists_each_miss_with_what_the_clip_shows():
    from calibstudio.engine.models.demo.adherence import check_clip
    from calibstudio.engine.models.demo.captions import example
    from calibstudio.engine.models.demo.evaluate import clip_verdicts, misses

    clip, text, _ = example(3)  # a rendered clip adheres to its own caption, not to another one
    wrong = "a red circle changes colour to blue on a gray background"
    hit, miss = clip_verdicts(check_clip(clip, text, (0, 255))), clip_verdicts(check_clip(clip, wrong, (0, 255)))
    results = {"per_prompt": [{"prompt": text, "dense": hit, "sparse": hit},
                              {"prompt": wrong, "dense": hit, "sparse": miss}]}
    (line,) = misses(results)
    assert line.startswith("sparse missed") and wrong in line and line.endswith(f"shows {miss['read']}")
    assert "direction" in line and all(hit[k] for k in ("color", "shape", "direction"))


def test_eval_generates_at_the_asked_guidance_else_the_models(monkeypatch):
    from calibstudio.engine.models.demo import evaluate as module

    class Seen(Exception):
        pass

    def compare(pipe, adapter, settings, *rest):
        raise Seen(settings.guidance_scale)

    monkeypatch.setattr(module, "compare", compare)
    for asked, used in ((2.5, 2.5), (None, module.load_model("demo", "cpu").defaults["guidance_scale"])):
        with pytest.raises(Seen) as seen:
            module.evaluate(["a red circle moves left on a blue background"], device="cpu", guidance_scale=asked)
        assert seen.value.args == (used,)


def test_eval_with_a_missing_prompt_file_is_one_clear_line(tmp_path):
    result = run("eval", str(tmp_path / "nope.txt"))
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0 and "does not exist" in result.stderr


@pytest.mark.slow
def test_compare_on_the_demo_model_refuses_a_profile_of_other_steps(short_profile, tmp_path):
    profile, _ = short_profile
    result = run("compare", "--profile", str(profile), "--prompt", "a red circle", "--out-dir", str(tmp_path))
    assert result.returncode == 1 and "calibrated with 4 steps" in result.stderr
    assert not any(tmp_path.iterdir())  # nothing half-written
