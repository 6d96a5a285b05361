"""ProfileModel: the one holder of profile, threshold and selection."""

from __future__ import annotations

import pytest

from calibstudio.app.profile_model import ProfileModel
from calibstudio.engine.profile import TAU_MAX, TAU_MIN, ProfileError


def test_threshold_is_clamped_and_steps_by_levels(qtbot):
    model = ProfileModel(0.999)
    with qtbot.waitSignal(model.threshold_changed):
        model.set_threshold(2.0)
    assert model.threshold == TAU_MAX
    model.set_threshold(0.5)
    assert model.threshold == TAU_MIN
    model.step_threshold(1)
    assert model.level == 1 and model.applied_threshold > TAU_MIN
    model.step_threshold(-5)
    assert model.level == 0


def test_open_keeps_selection_in_range_and_previous_on_error(qtbot, small_profile, other_profile, corrupt_profile):
    model = ProfileModel()
    model.open(small_profile)
    model.select(bin_index=1, layer=3, head=3)
    assert model.selection == (1, 3, 3)
    model.select(layer=99, head=-4)
    assert model.selection == (1, 3, 0)
    with pytest.raises(ProfileError):
        model.open(corrupt_profile)
    assert model.profile.path == small_profile and model.selection == (1, 3, 0)
    with qtbot.waitSignals([model.profile_changed, model.selection_changed]):
        model.open(other_profile)
    assert model.selection == (0, 2, 0)  # other has 1 bin, 3 layers, 2 heads


def test_stats_follow_the_threshold(small_profile):
    model = ProfileModel(0.95)
    assert model.stats() is None
    model.open(small_profile)
    low = model.stats()
    model.set_threshold(0.9999)
    high = model.stats()
    assert high.density > low.density
    assert high.mean_retained >= 0.9999 - 1e-6 and high.worst_retained <= high.mean_retained
    assert high.speedup.speedup < low.speedup.speedup
    assert high.densities.shape == (2, 4, 4)
    b, layer, head = high.worst_at
    assert high.retained_worst[b, layer, head] == high.worst_retained


def test_dense_first_steps_lower_the_predicted_speedup_not_the_mask_density(qtbot, small_profile):
    model = ProfileModel(0.95)
    model.open(small_profile)
    sparse = model.stats()
    with qtbot.waitSignal(model.dense_steps_changed):
        model.set_dense_steps(2)
    some_dense = model.stats()
    assert some_dense.density == sparse.density  # the masks are the same
    assert 1.0 <= some_dense.speedup.speedup < sparse.speedup.speedup
    assert "first 2 steps run dense" in some_dense.speedup.explain()
    model.set_dense_steps(model.profile.meta.num_steps)
    assert model.stats().speedup.speedup == pytest.approx(1.0)


def test_heatmaps_are_cached(small_profile):
    model = ProfileModel()
    model.open(small_profile)
    assert model.heatmap(0, 1, 2) is model.heatmap(0, 1, 2)
