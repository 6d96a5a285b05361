"""Each panel shown alone on a model: heatmap hover readout, overview clicks, small multiples, slider."""

from __future__ import annotations

import itertools

import numpy as np
from PySide6.QtCore import QPoint, QPointF, Qt

from calibstudio.app.heatmap_view import HeatmapView
from calibstudio.app.overview_view import OverviewView
from calibstudio.app.profile_model import ProfileModel
from calibstudio.app.small_multiples import SmallMultiplesView, grid_columns
from calibstudio.app.threshold_panel import ThresholdPanel
from calibstudio.engine.profile import THRESHOLDS


def _show(qtbot, widget, size=(700, 600)):
    qtbot.addWidget(widget)
    widget.resize(*size)
    widget.show()
    qtbot.waitExposed(widget)
    return widget


def _click(qtbot, graphics, scene_pos):
    pos = graphics.mapFromScene(scene_pos)
    qtbot.mouseClick(graphics.viewport(), Qt.MouseButton.LeftButton, pos=QPoint(pos.x(), pos.y()))


def test_heatmap_hover_readout_for_a_known_block(dark_app, qtbot, small_profile):
    model = ProfileModel(0.99)
    model.open(small_profile)
    model.select(bin_index=1, layer=2, head=3)
    view = _show(qtbot, HeatmapView(model))
    head_map = model.heatmap(1, 2, 3)
    query, key = 9, 8  # local attention: a block near the diagonal carries mass
    scene = view.plot.vb.mapViewToScene(QPointF(key + 0.5, query + 0.5))
    view.graphics.scene().sigMouseMoved.emit(scene)
    text = view.readout.text()
    assert text.startswith("query block 9 [f1 r2 c0 – r3 c15]  ·  key block 8 [f1 r0 c0 – r1 c15]")
    assert f"mass {head_map.mass[query, key]:.3g}" in text
    kept = head_map.entry_level[query, key] <= model.level
    assert ("KEPT" in text) == bool(kept)
    assert view.readout_at(key=999, query=0) is None


def test_heatmap_follows_selection_and_threshold(dark_app, qtbot, small_profile):
    model = ProfileModel(0.9)
    model.open(small_profile)
    view = _show(qtbot, HeatmapView(model))
    segments_low = len(view.outline.getData()[0])
    model.set_threshold(0.9999)
    assert len(view.outline.getData()[0]) != segments_low
    view.head_box.setValue(2)
    assert model.selection[2] == 2
    model.select(layer=3)
    assert view.layer_box.value() == 3
    np.testing.assert_allclose(view.image.image, np.log10(np.maximum(model.heatmap(0, 3, 2).mass, 1e-30)).clip(-7),
                               atol=1e-5)
    view.outline_check.setChecked(False)
    assert not view.outline.isVisible()


def test_heatmap_title_says_when_the_error_bound_raised_a_heads_threshold(dark_app, qtbot, tmp_path):
    from calibstudio.engine.profile import ProfileMeta, ProfileWriter, threshold_level

    floor = threshold_level(0.99)
    meta = ProfileMeta(model={"name": "t"}, grid=(1, 4, 16), block_size=(8, 8), num_steps=1, step_bins=((0, 1),),
                       layers=1, heads=2, calibration={"error_bound": {"bound": 0.05, "floored_heads": [
                           [0, 0, 1, round(float(THRESHOLDS[floor]), 6)]]}})
    writer = ProfileWriter(meta)
    writer.add(0, 0, np.exp(np.random.default_rng(0).normal(0, 3, (2, 8, 8))), floors=np.array([0, floor]))
    model = ProfileModel(0.9)
    model.open(writer.save(tmp_path / "floored.safetensors"))
    view = _show(qtbot, HeatmapView(model))
    assert "error bound" not in view.title.text()
    model.select(head=1)
    assert f"at τ 0.90000 (raised to {THRESHOLDS[floor]:.5f} by the error bound): keeps " in view.title.text()
    assert f"keeps {model.stats().densities[0, 0, 1]:.1%}" in view.title.text()
    model.set_threshold(0.999)  # above the floor the head follows the slider again
    assert "error bound" not in view.title.text()


def test_overview_click_selects_that_head(dark_app, qtbot, small_profile):
    model = ProfileModel(0.999)
    model.open(small_profile)
    view = _show(qtbot, OverviewView(model), (500, 500))
    with qtbot.waitSignal(model.selection_changed):
        _click(qtbot, view.graphics, view.scene_pos_of(layer=2, head=1))
    assert model.selection[1:] == (2, 1)
    assert view.cursor.rect().topLeft().toTuple() == (1.0, 2.0)


def test_overview_matrix_follows_threshold(dark_app, qtbot, small_profile):
    model = ProfileModel(0.9)
    model.open(small_profile)
    view = _show(qtbot, OverviewView(model), (500, 500))
    before = view.image.image.copy()
    model.set_threshold(0.9999)
    assert (view.image.image >= before).all() and (view.image.image > before).any()
    assert "0.9999" in view.caption.text()


def test_small_multiples_show_every_head_and_click_selects(dark_app, qtbot, small_profile):
    model = ProfileModel(0.99)
    model.open(small_profile)
    view = _show(qtbot, SmallMultiplesView(model), (800, 600))
    assert len(view._tiles) == 4
    _, box, _ = view._tiles[2]
    with qtbot.waitSignal(model.selection_changed):
        _click(qtbot, view.graphics, box.sceneBoundingRect().center())
    assert model.selection[2] == 2
    centre = view._tiles[1][1].sceneBoundingRect().center()

    class DoubleClick:  # pyqtgraph's MouseClickEvent, as the scene emits it for a double click
        def scenePos(self):  # noqa: N802
            return centre

        def double(self):
            return True

    with qtbot.waitSignal(view.head_activated) as signal:
        view.graphics.scene().sigMouseClicked.emit(DoubleClick())
    assert signal.args == [1] and model.selection[2] == 1
    assert grid_columns(12) in (4, 6) and grid_columns(40) == 8 and grid_columns(1) == 1


def test_slider_updates_density_label(dark_app, qtbot, small_profile):
    model = ProfileModel(0.9)
    model.open(small_profile)
    panel = _show(qtbot, ThresholdPanel(model), (400, 300))
    low = panel.density_label.text()
    panel.slider.setValue(panel.slider.maximum())
    assert model.threshold == THRESHOLDS[-1] or abs(model.threshold - 0.9999) < 1e-9
    high = panel.density_label.text()
    assert low != high and high == f"{model.stats().density:.1%}"
    assert panel.spin.value() == round(model.threshold, 5)
    assert "×" in panel.speedup_label.text() and "attention share" in panel.speedup_label.toolTip()
    panel.spin.setValue(0.95)
    assert abs(model.threshold - 0.95) < 1e-9 and panel.slider.value() == model.level
    # with dense first steps the label is the clip's density, as a compare reports it; the tooltip splits it
    sparse_steps = model.stats().density
    model.set_dense_steps(2)
    clip = model.profile.density(model.threshold, 2)
    assert clip > sparse_steps and panel.density_label.text() == f"{clip:.1%}"
    assert f"{sparse_steps:.1%} in the others" in panel.density_label.toolTip()


def test_selected_head_readout_follows_selection_without_overlapping_rows(dark_app, qtbot, small_profile):
    model = ProfileModel(0.95)
    model.open(small_profile)
    panel = _show(qtbot, ThresholdPanel(model), (360, 300))
    model.select(bin_index=1, layer=2, head=3)
    stats = model.stats()
    assert panel.head_label.text() == f"L2 H3 bin 1: {stats.densities[1, 2, 3]:.1%} of blocks"
    assert panel.head_retained_label.text().startswith(f"{stats.retained_mean[1, 2, 3]:.5f} mean")
    rows = [panel.retained_label, panel.worst_label, panel.head_label, panel.head_retained_label,
            panel.applied_label]
    for upper, lower in itertools.pairwise(rows):
        assert upper.geometry().bottom() < lower.geometry().top(), (upper.text(), lower.text())
