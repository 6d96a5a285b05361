"""Error-bounded calibration: floors fold into the profile exactly, and the error is the attention output's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from calibstudio.engine.attention_hook import dense_attention  # noqa: E402
from calibstudio.engine.error_bound import CANDIDATES, ErrorRecorder, floors_for  # noqa: E402
from calibstudio.engine.profile import (  # noqa: E402
    NEVER,
    TAU_MIN,
    Profile,
    ProfileMeta,
    ProfileWriter,
    apply_floor,
    threshold_level,
)
from calibstudio.kernels.layout import BlockLayout  # noqa: E402
from calibstudio.kernels.reference import reference_attention  # noqa: E402

GRID, BLOCK, HEADS = (1, 4, 12), 8, 3  # 48 tokens: 6 x 6 blocks


def _profile(path: Path, mass: np.ndarray, floors: np.ndarray | None = None) -> Profile:
    meta = ProfileMeta(model={"name": "t"}, grid=GRID, block_size=(BLOCK, BLOCK), num_steps=1, step_bins=((0, 1),),
                       layers=1, heads=HEADS)
    writer = ProfileWriter(meta)
    writer.add(0, 0, mass, floors=floors)
    return Profile.open(writer.save(path))


def _mass(seed: int = 0) -> np.ndarray:
    return np.exp(np.random.default_rng(seed).normal(0, 3, size=(HEADS, 6, 6))).astype(np.float32)


def test_a_floor_is_the_lowest_rung_from_which_every_higher_one_is_within_the_bound():
    errors = np.array([[0.01, 0.01, 0.0, 0.0],  # within everywhere: no floor
                       [0.20, 0.04, 0.01, 0.0],  # from 0.95
                       [0.20, 0.04, 0.06, 0.0],  # 0.95 is within but 0.99 is not: from 0.999
                       [0.30, 0.20, 0.10, 0.06]])  # never within: dense
    assert len(CANDIDATES) == errors.shape[1]
    assert floors_for(errors, 0.05).tolist() == [0, threshold_level(0.95), threshold_level(0.999), NEVER]


def test_a_folded_floor_keeps_exactly_the_blocks_of_the_higher_threshold():
    entry = np.random.default_rng(1).integers(0, 256, size=(6, 6)).astype(np.uint8)
    for floor in (0, 40, 200, NEVER):
        folded = apply_floor(entry, floor)
        for level in (0, 39, 40, 41, 254):
            np.testing.assert_array_equal(folded <= level, entry <= max(level, floor))
    assert (apply_floor(entry, NEVER) <= 0).all()  # dense: even the blocks no threshold keeps


def test_a_profile_with_floors_reads_as_the_head_at_its_floor(tmp_path):
    mass = _mass()
    plain = _profile(tmp_path / "plain.safetensors", mass)
    floored = _profile(tmp_path / "floored.safetensors", mass, np.array([0, threshold_level(0.99), NEVER], np.uint8))
    for tau in (TAU_MIN, 0.95, 0.99, 0.999):
        got, at = floored.mask(0, 0, tau), [plain.mask(0, 0, t) for t in (tau, max(tau, 0.99))]
        np.testing.assert_array_equal(got[0], at[0][0])
        np.testing.assert_array_equal(got[1], at[1][1])
        assert got[2].all()
        # densities and retained mass, which the slider and the studio read, follow the same rule
        assert floored.densities(tau)[0, 0, 1] == pytest.approx(plain.densities(max(tau, 0.99))[0, 0, 1])
        assert floored.densities(tau)[0, 0, 2] == 1.0 and floored.retained(tau)[0][0, 0, 2] == pytest.approx(1.0)
        assert floored.retained(tau)[0][0, 0, 1] == pytest.approx(plain.retained(max(tau, 0.99))[0][0, 0, 1])
    assert plain.densities(TAU_MIN)[0, 0, 2] < 1.0


def _peaked() -> np.ndarray:
    """One key block holds 99.5% of every row: rungs 0.9-0.99 keep the same blocks, 0.999 more."""
    mass = np.ones((HEADS, 6, 6), np.float32)
    mass[:, np.arange(6), np.arange(6)] = 1000.0
    return mass


@pytest.mark.parametrize("mass", [_mass(2), _peaked(), np.ones((HEADS, 6, 6), np.float32)],
                         ids=["random", "equal-rungs", "whole-at-every-rung"])
def test_the_recorded_error_is_the_relative_error_of_each_heads_sparse_output(tmp_path, mass):
    profile = _profile(tmp_path / "p.safetensors", mass)
    recorder = ErrorRecorder(profile)
    gen = torch.Generator().manual_seed(0)
    errors, norms = np.zeros((HEADS, len(CANDIDATES))), np.zeros(HEADS)
    for _ in range(2):  # two calls of one bin add up before the ratio is taken
        q, k, v = (torch.randn(2, 48, HEADS, 16, generator=gen) for _ in range(3))
        out = dense_attention(q, k, v)
        recorder.add(0, 0, q, k, v, out)
        norms += out.square().sum(dim=(0, 1, 3)).numpy()
        for i, tau in enumerate(CANDIDATES):
            layout = BlockLayout.from_mask(torch.from_numpy(profile.mask(0, 0, tau)), BLOCK, BLOCK)
            errors[:, i] += (reference_attention(q, k, v, layout) - out).square().sum(dim=(0, 1, 3)).numpy()
    expected = np.sqrt(errors / norms[:, None])
    np.testing.assert_allclose(recorder.relative_error()[0, 0], expected, rtol=1e-3, atol=1e-6)
