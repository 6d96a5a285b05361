"""Profiles: masks grow with the threshold, keep the promised mass, survive save/load, and reject bad files."""

from __future__ import annotations

import json
import os
import struct
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.numpy import save_file

from calibstudio.engine import profile as P
from calibstudio.engine.profile import Profile, ProfileError, ProfileMeta, ProfileWriter, build_profile


def _meta(grid=(2, 4, 8), block=8, heads=2, layers=2, bins=((0, 2), (2, 4))) -> ProfileMeta:
    return ProfileMeta(model={"name": "tiny", "class": "Tiny", "config_hash": "abc"}, grid=grid,
                       block_size=(block, block), num_steps=bins[-1][1], step_bins=bins, layers=layers, heads=heads,
                       calibration={"prompts": ["a red circle", "a blue square"]})


def _random_mass(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Peaky block mass like real attention: log-normal with a wide spread."""
    return np.exp(rng.normal(0, 3, size=shape)).astype(np.float32)


@pytest.fixture
def saved(tmp_path: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    meta = _meta()
    mass = _random_mass(rng, (4, meta.layers, meta.heads, meta.nq, meta.nk))
    per_prompt = mass[None] * np.exp(rng.normal(0, 0.3, size=(2, *mass.shape)))
    path = tmp_path / "p.safetensors"
    build_profile(path, mass, meta, per_prompt=per_prompt).close()
    return path, mass, per_prompt


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**31), heads=st.integers(1, 3), nq=st.integers(1, 9), nk=st.integers(1, 12),
       spread=st.floats(0.1, 6.0), taus=st.lists(st.floats(P.TAU_MIN, P.TAU_MAX), min_size=2, max_size=6))
def test_masks_grow_with_threshold_and_keep_the_promised_mass(seed, heads, nq, nk, spread, taus):
    rng = np.random.default_rng(seed)
    mass = np.exp(rng.normal(0, spread, size=(heads, nq, nk)))
    mass[rng.random(mass.shape) < 0.2] = 0.0  # exact zeros happen (masked tails)
    compiled = P.compile_layer(mass)
    levels = np.stack([P._unpack_head(blob, nq, nk)[1] for blob in compiled.blobs])
    normalised = P.normalise_rows(mass)
    previous = None
    for tau in sorted(taus):
        kept = levels <= P.threshold_level(tau)
        assert kept.any(axis=-1).all(), "every query block keeps at least one key block"
        retained = np.where(kept, normalised, 0.0).sum(axis=-1)
        assert (retained >= tau - 1e-9).all()
        if previous is not None:
            assert (kept | ~previous).all(), "a block kept at a lower threshold stays kept"
        previous = kept
        density = compiled.kept[:, P.threshold_level(tau)] / (nq * nk)
        np.testing.assert_allclose(density, kept.mean(axis=(1, 2)))


def test_save_load_round_trips_exactly(tmp_path: Path):
    rng = np.random.default_rng(2)
    meta = _meta()
    writer = ProfileWriter(meta)
    layers = {}
    for b in range(meta.bins):
        for layer in range(meta.layers):
            mass = _random_mass(rng, (meta.heads, meta.nq, meta.nk))
            layers[b, layer] = P.compile_layer(mass, mass[None] * rng.uniform(0.5, 2, size=(3, *mass.shape)))
            writer.put(b, layer, layers[b, layer])
    with Profile.open(writer.save(tmp_path / "p.safetensors")) as profile:
        assert profile.meta == meta
        for (b, layer), compiled in layers.items():
            np.testing.assert_array_equal(profile._kept[b, layer], compiled.kept)
            np.testing.assert_array_equal(profile._retained_mean[b, layer], compiled.retained_mean.astype(np.float32))
            np.testing.assert_array_equal(profile._retained_worst[b, layer], compiled.retained_worst.astype(np.float32))
            for head, blob in enumerate(compiled.blobs):
                q, levels = P._unpack_head(blob, meta.nq, meta.nk)
                heat = profile.heatmap(b, layer, head)
                np.testing.assert_array_equal(heat.entry_level, levels)
                np.testing.assert_array_equal(heat.mass, P.dequantise_mass(q))


def test_tables_agree_with_the_masks_they_summarise(saved):
    path, mass, per_prompt = saved
    with Profile.open(path) as profile:
        meta = profile.meta
        for tau in (0.9, 0.97, 0.999, 0.9999):
            densities = profile.densities(tau)
            mean, worst = profile.retained(tau)
            for b, (start, end) in enumerate(meta.step_bins):
                for layer in range(meta.layers):
                    mask = profile.mask(b, layer, tau)
                    np.testing.assert_allclose(densities[b, layer], mask.mean(axis=(1, 2)))
                    data = P.normalise_rows(mass[start:end, layer]).mean(axis=0)
                    retained_rows = np.where(mask, data, 0).sum(axis=-1)
                    assert (retained_rows >= tau - 1e-6).all()
                    np.testing.assert_allclose(mean[b, layer], retained_rows.mean(axis=-1), rtol=1e-5)
                    prompts = P.normalise_rows(per_prompt[:, start:end, layer]).mean(axis=1)
                    each = np.where(mask, prompts, 0).sum(axis=-1).mean(axis=-1)
                    np.testing.assert_allclose(worst[b, layer], each.min(axis=0), rtol=1e-5)


def test_whole_clip_density_weighs_steps_and_counts_dense_first_steps_as_one(saved):
    path, _, _ = saved
    with Profile.open(path) as profile:
        meta = profile.meta
        per_bin = profile.densities(0.97).mean(axis=(1, 2))
        per_step = np.array([per_bin[meta.bin_of_step(step)] for step in range(meta.num_steps)])
        assert profile.density(0.97) == pytest.approx(per_step.mean())
        first = meta.step_bins[0][1]  # the first bin's steps
        assert profile.density(0.97, first) == pytest.approx((first + per_step[first:].sum()) / meta.num_steps)
        assert profile.density(0.97, meta.num_steps) == 1.0


def test_whole_clip_density_weighs_each_step_by_its_transformer_passes(saved, tmp_path):
    """Guidance and contrast prompts make some steps cost more passes; the studio's prediction follows them."""
    path, mass, per_prompt = saved
    with Profile.open(path) as plain:
        meta = plain.meta
        per_step = np.array([plain.densities(0.97).mean(axis=(1, 2))[meta.bin_of_step(k)]
                             for k in range(meta.num_steps)])
    passes = [4.0] + [2.0] * (meta.num_steps - 1)
    weighted = replace(meta, calibration={**meta.calibration, "passes_per_step": passes})
    build_profile(tmp_path / "w.safetensors", mass, weighted, per_prompt=per_prompt).close()
    with Profile.open(tmp_path / "w.safetensors") as profile:
        assert profile.density(0.97) == pytest.approx(np.dot(per_step, passes) / sum(passes))
        assert profile.density(0.97, 1) == pytest.approx((4 + 2 * per_step[1:].sum()) / sum(passes))
    for bad in ([2.0], [0.0] * meta.num_steps, ["two"] * meta.num_steps):
        with pytest.raises(ProfileError, match="passes_per_step"):
            replace(meta, calibration={"passes_per_step": bad}).validate()


def test_threshold_outside_the_range_is_refused(saved):
    path, *_ = saved
    with Profile.open(path) as profile:
        for tau in (0.5, 0.99999, 1.0):
            with pytest.raises(ProfileError, match="outside the supported range"):
                profile.densities(tau)
        assert profile.effective_threshold(0.99) >= 0.99


def test_step_bins_follow_changes_in_the_pattern():
    rng = np.random.default_rng(3)
    early, late = rng.random((1, 4, 6, 6)), rng.random((1, 4, 6, 6))
    mass = np.concatenate([early.repeat(3, 0), late.repeat(7, 0)]) + 1e-3 * rng.random((10, 4, 6, 6))
    assert P.choose_step_bins(mass, 2) == ((0, 3), (3, 10))
    assert P.choose_step_bins(mass, 1) == ((0, 10),)
    with pytest.raises(ProfileError):
        P.choose_step_bins(mass, 11)


def test_build_profile_chooses_bins_when_not_given(tmp_path: Path):
    rng = np.random.default_rng(4)
    mass = rng.random((6, 1, 2, 4, 4))
    meta = {"model": {"name": "x"}, "grid": (1, 4, 8), "block_size": (8, 8)}
    with build_profile(tmp_path / "p.safetensors", mass, meta, n_bins=3) as profile:
        assert profile.meta.bins == 3 and profile.meta.step_bins[-1][1] == 6
        assert profile.meta.bin_of_step(5) == 2


def test_incompatible_model_or_grid_is_named(saved):
    path, *_ = saved
    with Profile.open(path) as profile:
        profile.check_compatible({"class": "Tiny", "config_hash": "abc"}, (2, 4, 8))
        with pytest.raises(ProfileError, match="calibrated for tiny"):
            profile.check_compatible({"class": "Tiny", "config_hash": "other"}, (2, 4, 8))
        with pytest.raises(ProfileError, match="token grid"):
            profile.check_compatible({"class": "Tiny", "config_hash": "abc"}, (3, 4, 8))


def test_failed_write_leaves_the_old_file_and_no_temporary(saved, monkeypatch):
    path, mass, _ = saved
    before = path.read_bytes()

    def full_disk(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(P, "save_file", full_disk)
    meta = _meta()
    writer = ProfileWriter(meta)
    for b in range(meta.bins):
        for layer in range(meta.layers):
            writer.add(b, layer, mass[0, layer])
    with pytest.raises(ProfileError, match="No space left on device"):
        writer.save(path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]


def test_incomplete_writer_refuses_to_save(tmp_path: Path):
    writer = ProfileWriter(_meta())
    with pytest.raises(ProfileError, match="incomplete"):
        writer.save(tmp_path / "p.safetensors")
    assert not (tmp_path / "p.safetensors").exists()


# --- corrupt files: each gets one clear error -------------------------------------------------


def _rewrite(path: Path, out: Path, edit) -> Path:
    """Re-save ``path`` with its tensors and metadata passed through ``edit(tensors, metadata)``."""
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as handle:
        tensors = {name: handle.get_tensor(name) for name in handle.keys()}
        metadata = dict(handle.metadata())
    edit(tensors, metadata)
    save_file(tensors, str(out), metadata=metadata)
    return out


def _newer(tensors, metadata):
    metadata["version"] = str(P.FORMAT_VERSION + 1)


def _foreign(tensors, metadata):
    metadata["format"] = "someone.else"


def _missing(tensors, metadata):
    del tensors["retained_worst"]


def _shape(tensors, metadata):
    tensors["kept_count"] = tensors["kept_count"][:, :1].copy()


def _nan(tensors, metadata):
    tensors["retained_mean"][0, 0, 0, 3] = np.nan


def _offsets(tensors, metadata):
    tensors["head_offsets"][1, 1, 1, 1] = 10**9


def _bad_meta(tensors, metadata):
    metadata["meta"] = json.dumps({"model": {}})


def _bins(tensors, metadata):
    meta = json.loads(metadata["meta"])
    meta["step_bins"] = [[0, 3], [2, 4]]
    metadata["meta"] = json.dumps(meta)


@pytest.mark.parametrize(("edit", "message"), [
    (_newer, "newer than this calibstudio reads"),
    (_foreign, "not a calibstudio profile"),
    (_missing, "missing tensor 'retained_worst'"),
    (_shape, "tensor 'kept_count' has shape"),
    (_nan, "contains NaN"),
    (_offsets, "offsets point outside"),
    (_bad_meta, "unreadable metadata"),
    (_bins, "step bins must tile"),
])
def test_corrupt_profiles_are_named(saved, tmp_path, edit, message):
    path, *_ = saved
    bad = _rewrite(path, tmp_path / "bad.safetensors", edit)
    with pytest.raises(ProfileError, match=message):
        Profile.open(bad)


def test_truncated_and_foreign_files(saved, tmp_path):
    path, *_ = saved
    data = path.read_bytes()
    cases = {
        "half.safetensors": (data[: len(data) // 2], "truncated"),
        "header.safetensors": (data[:100], "truncated"),
        "empty.safetensors": (b"", "truncated"),
        "text.safetensors": (b"hello, this is not a profile\n" * 10, "not a calibstudio profile"),
    }
    for name, (content, message) in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ProfileError, match=message):
            Profile.open(tmp_path / name)
    with pytest.raises(ProfileError, match="does not exist"):
        Profile.open(tmp_path / "nowhere.safetensors")


def test_corrupt_head_data_is_named_on_read(saved, tmp_path):
    path, *_ = saved
    data = bytearray(path.read_bytes())
    (length,) = struct.unpack("<Q", data[:8])
    with Profile.open(path) as profile:
        start = int(profile._offsets[0, 1, 0, 0])
    data[8 + length + _blob_base(path) + start + 20] ^= 0xFF
    bad = tmp_path / "flipped.safetensors"
    bad.write_bytes(bytes(data))
    with Profile.open(bad) as profile, pytest.raises(ProfileError, match="head data for bin 0, layer 1, head 0"):
        profile.heatmap(0, 1, 0)


def _blob_base(path: Path) -> int:
    (length,) = struct.unpack("<Q", path.read_bytes()[:8])
    header = json.loads(path.read_bytes()[8 : 8 + length])
    return header["head_blobs"]["data_offsets"][0]


def test_profile_file_is_the_only_thing_written(saved):
    path, *_ = saved
    assert [p.name for p in path.parent.iterdir()] == [path.name]
    assert os.access(path, os.R_OK)
