"""The ``calibstudio`` command as a user runs it: help for everything, profile tools, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from calibstudio.cli import build_parser, main
from calibstudio.engine.profile import Profile, build_profile


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "calibstudio", *args], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def profile_path(tmp_path_factory) -> Path:
    rng = np.random.default_rng(0)
    mass = np.exp(rng.normal(0, 3, size=(4, 3, 2, 8, 8)))
    path = tmp_path_factory.mktemp("cli") / "tiny.safetensors"
    meta = {"model": {"name": "tiny-model", "class": "Tiny"}, "grid": (2, 4, 8), "block_size": (8, 8),
            "calibration": {"prompts": ["a red circle moves left"]}}
    build_profile(path, mass, meta, per_prompt=mass[None] * rng.uniform(0.5, 2, (2, *mass.shape)), n_bins=2).close()
    return path


def test_every_subcommand_has_help():
    for name in ("studio", "engine", "calibrate", "generate", "compare", "bench", "profile"):
        result = run(name, "--help")
        assert result.returncode == 0, result.stderr
        assert "usage: calibstudio " + name in result.stdout
    assert run("profile", "show", "--help").returncode == 0


def test_studio_without_display_says_so(monkeypatch):
    for name in ("QT_QPA_PLATFORM", "DISPLAY", "WAYLAND_DISPLAY"):
        monkeypatch.delenv(name, raising=False)
    result = run("studio")
    if sys.platform.startswith("linux"):
        assert result.returncode == 1
        assert result.stderr.strip().count("\n") == 0 and "no display" in result.stderr


def test_studio_screenshot(profile_path, tmp_path):
    pytest.importorskip("PySide6")
    png = tmp_path / "studio.png"
    result = run("studio", "--profile", str(profile_path), "--screenshot", str(png), "--settings",
                 str(tmp_path / "settings.ini"), "--layer", "1", "--head", "1")
    assert result.returncode == 0, result.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_profile_info(profile_path):
    result = run("profile", "info", str(profile_path))
    assert result.returncode == 0, result.stderr
    assert "tiny-model" in result.stdout and "2 x 4 x 8 tokens = 64" in result.stdout
    assert "8 x 8 of 8 x 8 tokens" in result.stdout and "2 bins" in result.stdout
    summary = json.loads(run("profile", "info", str(profile_path), "--json").stdout)
    assert summary["layers"] == 3 and summary["heads"] == 2 and len(summary["step_bins"]) == 2


def test_profile_show_reports_density_per_layer_and_head(profile_path):
    low = json.loads(run("profile", "show", str(profile_path), "-t", "0.9", "--json").stdout)
    high = json.loads(run("profile", "show", str(profile_path), "-t", "0.9999", "--json").stdout)
    assert np.array(low["density_per_layer_head"]).shape == (3, 2)
    assert low["density"] <= high["density"]
    assert high["retained_mean"] >= 0.9999 - 1e-6 and high["effective_threshold"] >= 0.9999
    assert 0 < high["retained_worst"] <= 1
    text = run("profile", "show", str(profile_path), "--threshold", "0.99", "--bin", "1")
    assert text.returncode == 0 and "bin 1" in text.stdout and "retained mass mean" in text.stdout


def test_profile_show_marks_the_heads_the_error_bound_raised(tmp_path):
    from calibstudio.engine.profile import THRESHOLDS, ProfileMeta, ProfileWriter, threshold_level

    floor = threshold_level(0.99)
    meta = ProfileMeta(model={"name": "t"}, grid=(1, 4, 16), block_size=(8, 8), num_steps=2,
                       step_bins=((0, 1), (1, 2)), layers=2, heads=2,
                       calibration={"error_bound": {"bound": 0.05,
                                                    "floored_heads": [[1, 1, 0, float(THRESHOLDS[floor])]]}})
    writer = ProfileWriter(meta)
    mass = np.exp(np.random.default_rng(0).normal(0, 3, (2, 8, 8)))
    for b in range(2):
        for layer in range(2):
            writer.add(b, layer, mass, floors=np.array([floor, 0]) if (b, layer) == (1, 1) else None)
    path = writer.save(tmp_path / "floored.safetensors")
    show = lambda *a: run("profile", "show", str(path), *a)  # noqa: E731
    assert json.loads(show("-t", "0.9", "--json").stdout)["raised_by_error_bound"] == [[1, 0]]
    assert json.loads(show("-t", "0.9", "--bin", "0", "--json").stdout)["raised_by_error_bound"] == []
    assert json.loads(show("-t", "0.999", "--json").stdout)["raised_by_error_bound"] == [], "above the floor"
    text = show("-t", "0.9").stdout
    assert "*" in text.splitlines()[-2].split()[1] and "error bound raised" in text


def test_profile_show_defaults_to_the_recorded_recommended_threshold(profile_path):
    from calibstudio.engine.models.demo.model import default_folder

    shipped = json.loads(run("profile", "show", str(default_folder() / "profile.safetensors"), "--json").stdout)
    assert shipped["threshold"] == 0.9  # what the demo model's calibration recorded
    assert json.loads(run("profile", "show", str(profile_path), "--json").stdout)["threshold"] == 0.999


@pytest.mark.parametrize("content", [b"", b"garbage" * 50, b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":"])
def test_bad_files_get_one_line_and_nonzero_exit(tmp_path, content):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(content)
    for args in (("info", str(bad)), ("show", str(bad), "-t", "0.99")):
        result = run("profile", *args)
        assert result.returncode == 1
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("calibstudio: error:") and str(bad) in lines[0]


def test_bad_threshold_and_bin_are_named(profile_path):
    result = run("profile", "show", str(profile_path), "-t", "0.5")
    assert result.returncode == 1 and "outside the supported range" in result.stderr
    result = run("profile", "show", str(profile_path), "--bin", "7")
    assert result.returncode == 1 and "--bin 7" in result.stderr


def test_synthetic_profile_round_trip(tmp_path):
    out = tmp_path / "synthetic.safetensors"
    result = run("profile", "synthetic", str(out), "--grid", "2", "8", "16", "--layers", "2", "--heads", "3",
                 "--bins", "2", "--steps", "4", "--block", "16")
    assert result.returncode == 0, result.stderr
    summary = json.loads(run("profile", "info", str(out), "--json").stdout)
    assert summary["model"]["name"] == "synthetic" and summary["blocks"]["nq"] == 16


def test_parser_is_one_object():
    parser = build_parser()
    assert parser.parse_args(["profile", "show", "x", "-t", "0.99"]).threshold == 0.99


def test_jobs_use_the_models_recommended_threshold_unless_given():
    pytest.importorskip("diffusers")
    from calibstudio.engine.models.registry import WAN_DEFAULTS, LoadedModel

    model = LoadedModel(pipe=None, adapter=None, defaults={**WAN_DEFAULTS, "threshold": 0.9})
    compare = ["compare", "--prompt", "x", "--out-dir", "out"]
    assert model.threshold(build_parser().parse_args(compare).threshold) == 0.9
    assert model.threshold(build_parser().parse_args([*compare, "-t", "0.95"]).threshold) == 0.95
    assert "recommended" in run("compare", "--help").stdout


def test_jobs_run_the_models_dense_first_steps_unless_given():
    """A model trained to attend locally only at low noise (demo.train --local-below) runs its noisiest steps dense."""
    pytest.importorskip("diffusers")
    from calibstudio.engine.jobs_cli import _generation
    from calibstudio.engine.models.registry import WAN_DEFAULTS, LoadedModel

    gated = LoadedModel(pipe=None, adapter=None, defaults={**WAN_DEFAULTS, "dense_steps": 3})
    compare = ["compare", "--prompt", "x", "--out-dir", "out"]
    assert _generation(build_parser().parse_args(compare), gated).dense_steps == 3
    assert _generation(build_parser().parse_args([*compare, "--dense-steps", "0"]), gated).dense_steps == 0
    assert LoadedModel(pipe=None, adapter=None, defaults=WAN_DEFAULTS).dense_steps(None) == 0
    # a clip shorter than the model's dense steps runs dense throughout instead of failing
    assert _generation(build_parser().parse_args([*compare, "--steps", "2"]), gated).dense_steps == 2


def test_calibration_runs_on_as_many_bundled_prompts_as_the_shipped_profile_unless_told(tmp_path):
    """The demo model's default calibration reproduces its shipped profile (2 prompts, minutes, not 6 prompts)."""
    pytest.importorskip("diffusers")
    from calibstudio.engine.jobs_cli import calibration_prompts, read_prompts
    from calibstudio.engine.models.registry import WAN_DEFAULTS, LoadedModel, load_model

    demo = load_model("demo", "cpu")
    bundled = read_prompts(None, demo.prompts)
    assert len(bundled) > 2 and calibration_prompts(demo) == bundled[:2]
    assert demo.error_bound(None) is None, "the shipped profile has no error pass, nor does the default"
    with Profile.open(demo.available_profile) as shipped:  # made by the default calibration, at today's defaults
        recorded = shipped.meta.calibration
    assert recorded["prompts"] == bundled[:2] and recorded["settings"]["error_bound"] is None
    assert {k: recorded["settings"][k] for k in ("steps", "frames", "guidance_scale", "dense_steps")} == {
        k: demo.defaults[k] for k in ("steps", "frames", "guidance_scale", "dense_steps")}
    assert calibration_prompts(demo, limit=3) == bundled[:3]
    mine = tmp_path / "prompts.txt"
    mine.write_text("one\ntwo\nthree\n")
    assert calibration_prompts(demo, str(mine)) == ["one", "two", "three"], "a file the user gives runs whole"
    wan = LoadedModel(pipe=None, adapter=None, defaults=WAN_DEFAULTS)
    assert calibration_prompts(wan) == read_prompts(None, wan.prompts)


@pytest.mark.slow
def test_calibrate_generate_compare_on_the_tiny_model(tmp_path):
    pytest.importorskip("diffusers")
    profile = tmp_path / "tiny.safetensors"
    result = run("calibrate", "--model", "tiny", "--limit", "2", "--block", "16", "--bins", "2", "--out", str(profile))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "wrote" in result.stdout and profile.is_file()
    with Profile.open(profile) as written:  # the studio starts a fresh session's tau at the model's recommended one
        assert written.meta.calibration["settings"]["recommended_threshold"] == 0.999
    out = tmp_path / "compare"
    result = run("compare", "--model", "tiny", "--profile", str(profile), "-t", "0.9", "--prompt", "a red circle",
                 "--out-dir", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["speedup"] > 0 and summary["density"] < 1
    assert sorted(p.name for p in out.iterdir()) == ["dense.mp4", "report.json", "side_by_side.mp4", "sparse.mp4"]
    report = json.loads((out / "report.json").read_text())
    assert len(report["step_ms"]["dense"]) == len(report["step_ms"]["sparse"]) == 4
    wrong = run("generate", "--model", "tiny", "--profile", str(profile), "--prompt", "x", "--height", "128",
                "--out", str(tmp_path / "g.mp4"))
    assert wrong.returncode == 1 and "token grid" in wrong.stderr and not (tmp_path / "g.mp4").exists()
    missing = run("generate", "--model", str(tmp_path / "no-such-model"), "--prompt", "x", "--out", "g.mp4")
    assert missing.returncode == 1 and "nor a local model folder" in missing.stderr


def test_bad_outputs_and_step_counts_fail_before_any_work(tmp_path, capsys):
    """A wrong --out or an impossible step count is named at once: no model load, no clip of noise."""
    cases = [
        (("generate", "--prompt", "x", "--out", str(tmp_path / "clip")), "ending in .mp4"),
        (("generate", "--prompt", "x", "--out", str(tmp_path / "no-such-folder" / "clip.mp4")), "does not exist"),
        (("calibrate", "--out", str(tmp_path / "no-such-folder" / "p.safetensors")), "does not exist"),
        (("eval", str(tmp_path / "p.txt"), "--json", str(tmp_path / "no-such-folder" / "e.json")), "does not exist"),
        (("compare", "--prompt", "x", "--out-dir", str(tmp_path / "p.txt")), "is a file"),
        (("generate", "--model", "tiny", "--prompt", "x", "--steps", "0", "--out", str(tmp_path / "c.mp4")),
         "at least one denoising step"),
        (("calibrate", "--model", "tiny", "--steps", "0", "--out", str(tmp_path / "p.safetensors")),
         "at least one denoising step"),
    ]
    (tmp_path / "p.txt").write_text("a red circle moves left on a blue background\n")
    for args, message in cases:  # in-process: the command's own main(), one interpreter start for all cases
        code, err = main(list(args)), capsys.readouterr().err
        assert code == 1, (args, err)
        assert message in err and err.count("calibstudio: error:") == 1, (args, err)
    assert [p.name for p in tmp_path.iterdir()] == ["p.txt"]


def test_options_are_taken_by_their_full_names_only(capsys):
    """`--mode dense` (no such option) is named as unknown, not read as `--model dense`."""
    parser = build_parser()
    for argv, unknown in ((["generate", "--mode", "dense", "--prompt", "x", "--out", "c.mp4"], "--mode dense"),
                          (["profile", "show", "p.safetensors", "--thresh", "0.9"], "--thresh 0.9")):
        with pytest.raises(SystemExit) as exit_:
            parser.parse_args(argv)
        assert exit_.value.code == 2 and f"unrecognized arguments: {unknown}" in capsys.readouterr().err
    assert parser.parse_args(["generate", "--model", "tiny", "--prompt", "x", "--out", "c.mp4"]).model == "tiny"
