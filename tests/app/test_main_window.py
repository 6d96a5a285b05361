"""The main window as a user drives it: open, bad files, shortcuts, drag-and-drop, remembered state."""

from __future__ import annotations

import time

from PySide6.QtCore import QMimeData, QPoint, Qt, QUrl
from PySide6.QtGui import QDropEvent
from PySide6.QtWidgets import QMessageBox

from calibstudio.app.main_window import MainWindow
from calibstudio.app.settings import open_settings


def test_starts_with_a_welcome_page_then_shows_the_profile(window, small_profile):
    assert window.centre.currentWidget() is window.welcome
    assert window.open_profile(small_profile)
    assert window.centre.currentWidget() is window.tabs
    assert "small.safetensors" in window.profile_label.text()
    assert "4×16×16 = 1,024 tokens" in window.grid_label.text()
    assert window.density_label.text().startswith("density ")


def test_corrupt_profile_shows_one_message_and_keeps_the_previous(window, small_profile, corrupt_profile,
                                                                   monkeypatch):
    shown = []
    monkeypatch.setattr(QMessageBox, "critical", lambda parent, title, text: shown.append((title, text)))
    assert window.open_profile(small_profile)
    window.model.select(layer=2, head=1)
    assert not window.open_profile(corrupt_profile)
    assert len(shown) == 1 and str(corrupt_profile) in shown[0][1] and "truncated" in shown[0][1]
    assert window.model.profile.path == small_profile and window.model.selection[1:] == (2, 1)
    assert "small.safetensors" in window.profile_label.text()
    # the profile still works: the heatmap redraws on a new selection
    window.model.select(head=3)
    assert window.heatmap.head_box.value() == 3


def test_slider_updates_status_bar_and_overview(window, small_profile):
    window.open_profile(small_profile)
    window.threshold.slider.setValue(0)
    density_low, overview_low = window.density_label.text(), window.overview.image.image.copy()
    window.threshold.slider.setValue(window.threshold.slider.maximum())
    assert window.density_label.text() != density_low
    assert (window.overview.image.image > overview_low).any()
    assert window.threshold.density_label.text() in window.density_label.text()


def test_keyboard_shortcuts_move_threshold_and_selection(window, small_profile, qtbot):
    window.open_profile(small_profile)
    window.heatmap.graphics.setFocus()
    level = window.model.level
    qtbot.keyClick(window, Qt.Key.Key_BracketRight)
    assert window.model.level == level + 1
    qtbot.keyClick(window, Qt.Key.Key_BracketLeft)
    qtbot.keyClick(window, Qt.Key.Key_BracketLeft)
    assert window.model.level == level - 1
    qtbot.keyClick(window, Qt.Key.Key_Down)
    qtbot.keyClick(window, Qt.Key.Key_Right)
    qtbot.keyClick(window, Qt.Key.Key_Right)
    assert window.model.selection == (0, 1, 2)
    qtbot.keyClick(window, Qt.Key.Key_PageDown)
    assert window.model.selection[0] == 1


def test_drop_a_profile_file(window, small_profile, other_profile):
    window.open_profile(small_profile)
    data = QMimeData()
    data.setUrls([QUrl.fromLocalFile(str(other_profile))])
    event = QDropEvent(QPoint(10, 10).toPointF(), Qt.DropAction.CopyAction, data, Qt.MouseButton.LeftButton,
                       Qt.KeyboardModifier.NoModifier)
    window.dropEvent(event)
    assert window.model.profile.path == other_profile


def test_threshold_folder_and_window_state_are_remembered(dark_app, qtbot, settings_file, small_profile):
    first = MainWindow(open_settings(settings_file))
    qtbot.addWidget(first)
    first.show()
    first.open_profile(small_profile)
    first.model.set_threshold(0.995)
    first.docks["jobs"].hide()
    first.resize(first.minimumSizeHint().width() + 7, 555)
    saved = first.geometry().size().toTuple()
    first.close()

    second = MainWindow(open_settings(settings_file))
    qtbot.addWidget(second)
    second.show()
    assert abs(second.model.threshold - 0.995) < 1e-9
    assert second.settings.value("recent_folder") == str(small_profile.parent)
    # the offscreen screen is small and restoreGeometry keeps windows on it: compare what fits
    assert second.size().height() == saved[1] and not second.docks["jobs"].isVisible()


def test_slider_keeps_every_view_live_under_50ms(dark_app, qtbot, settings_file, medium_profile):
    """Wan-1.3B's 30 layers x 12 heads: a slider tick updates every visible view in < 50 ms."""
    win = MainWindow(open_settings(settings_file), persist=False)
    qtbot.addWidget(win)
    win.resize(1400, 900)
    win.show()
    win.open_profile(medium_profile)
    for tab in (win.heatmap, win.small_multiples):
        win.tabs.setCurrentWidget(tab)
        dark_app.processEvents()
        times = []
        for level in list(range(20, 250, 23)):
            start = time.perf_counter()
            win.threshold.slider.setValue(level)
            dark_app.processEvents()
            times.append(time.perf_counter() - start)
        times.sort()
        print(tab.__class__.__name__, [round(1000 * t, 1) for t in times])
        assert times[len(times) // 2] < 0.050, (tab, times)


def test_a_profile_opened_by_hand_starts_at_its_models_recommended_threshold(dark_app, qtbot, settings_file,
                                                                            small_profile, other_profile,
                                                                            monkeypatch):
    from calibstudio.engine.profile import Profile

    real_open = Profile.open

    def calibrated_for_a_model_recommending(path):  # what `calibstudio calibrate` records
        profile = real_open(path)
        profile.meta.calibration["settings"] = {"recommended_threshold": 0.95}
        return profile

    monkeypatch.setattr(Profile, "open", staticmethod(calibrated_for_a_model_recommending))
    win = MainWindow(open_settings(settings_file), persist=False)
    qtbot.addWidget(win)
    assert win.open_profile(small_profile)
    assert win.model.threshold == 0.95, "no tau was ever chosen: the profile's recommended one applies"
    win.model.set_threshold(0.999)
    assert win.open_profile(other_profile)
    assert win.model.threshold == 0.999, "once a tau is in use, opening another profile keeps it"
    settings = open_settings(settings_file)
    settings.setValue("threshold", 0.99)
    remembered = MainWindow(settings, persist=False)
    qtbot.addWidget(remembered)
    assert remembered.open_profile(small_profile) and remembered.model.threshold == 0.99
