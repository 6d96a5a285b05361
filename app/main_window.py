"""The studio's main window: menus, docks, status bar, drag-and-drop and remembered state.

It wires the panels to one :class:`ProfileModel` and owns nothing else; everything it remembers
goes through the QSettings it is given (tests pass a temporary file).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QByteArray, QSettings, Qt
from PySide6.QtGui import QAction, QCloseEvent, QDragEnterEvent, QDropEvent, QKeySequence
from PySide6.QtWidgets import (
    QDockWidget,
    QFileDialog,
    QLabel,
    QMainWindow,
    QMenu,
    QMessageBox,
    QStackedWidget,
    QTabWidget,
    QWidget,
)

from calibstudio import __version__
from calibstudio.app import placeholders, theme
from calibstudio.app.heatmap_view import HeatmapView
from calibstudio.app.overview_view import OverviewView
from calibstudio.app.profile_model import DEFAULT_THRESHOLD, ProfileModel
from calibstudio.app.settings import read_float
from calibstudio.app.small_multiples import SmallMultiplesView
from calibstudio.app.threshold_panel import ThresholdPanel
from calibstudio.engine.profile import ProfileError

PROFILE_FILTER = "Calibration profiles (*.safetensors);;All files (*)"
WELCOME = ("<h2>CalibAtt Studio</h2><p>Open a calibration profile to inspect its block masks:<br>"
           "<b>File → Open profile…</b> (Ctrl+O), or drop a <code>.safetensors</code> file here.</p>"
           "<p style='color:{dim}'>No profile yet? <code>calibstudio profile synthetic demo.safetensors</code> "
           "writes one with video-attention structure.</p>")


class MainWindow(QMainWindow):
    """Heatmap, layer heads and (engine) previews in the centre; threshold and overview on the right."""

    def __init__(self, settings: QSettings, model: ProfileModel | None = None, persist: bool = True,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.settings = settings
        self.persist = persist
        self.model = model or ProfileModel(read_float(settings, "threshold", DEFAULT_THRESHOLD))
        self.setWindowTitle("CalibAtt Studio")
        self.setAcceptDrops(True)
        self.setDockNestingEnabled(True)

        self.heatmap = HeatmapView(self.model)
        self.small_multiples = SmallMultiplesView(self.model)
        self.overview = OverviewView(self.model)
        self.threshold = ThresholdPanel(self.model)
        self.tabs = QTabWidget()
        self.tabs.setDocumentMode(True)
        self.tabs.addTab(self.heatmap, "Heatmap")
        self.tabs.addTab(self.small_multiples, "Layer heads")
        self.tabs.addTab(placeholders.previews_panel(), "Previews")
        self.tabs.addTab(placeholders.speed_panel(), "Speed")
        self.welcome = QLabel(WELCOME.format(dim=theme.DIM_TEXT))
        self.welcome.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.welcome.setWordWrap(True)
        self.centre = QStackedWidget()
        self.centre.addWidget(self.welcome)
        self.centre.addWidget(self.tabs)
        self.setCentralWidget(self.centre)

        self.docks = {
            "threshold": self._dock("Threshold", self.threshold, Qt.DockWidgetArea.RightDockWidgetArea),
            "overview": self._dock("Overview: layer × head", self.overview, Qt.DockWidgetArea.RightDockWidgetArea),
            "jobs": self._dock("Jobs", placeholders.job_panel(), Qt.DockWidgetArea.LeftDockWidgetArea),
        }
        self.resizeDocks([self.docks["threshold"], self.docks["overview"]], [300, 560], Qt.Orientation.Vertical)
        self.resizeDocks([self.docks["threshold"]], [430], Qt.Orientation.Horizontal)
        self.resizeDocks([self.docks["jobs"]], [210], Qt.Orientation.Horizontal)

        self.profile_label = QLabel("no profile")
        self.grid_label = QLabel()
        self.density_label = QLabel()
        self.density_label.setObjectName("status_density")
        for label in (self.profile_label, self.grid_label, self.density_label):
            self.statusBar().addPermanentWidget(label)

        self._build_menus()
        self.small_multiples.head_activated.connect(lambda _: self.tabs.setCurrentWidget(self.heatmap))
        self.model.profile_changed.connect(self._on_profile)
        self.model.threshold_changed.connect(self._update_status)
        self._restore()

    # -- construction ---------------------------------------------------------------------------------------
    def _dock(self, title: str, widget: QWidget, area: Qt.DockWidgetArea) -> QDockWidget:
        dock = QDockWidget(title, self)
        dock.setObjectName(f"dock:{title}")  # saveState needs stable names
        dock.setWidget(widget)
        self.addDockWidget(area, dock)
        return dock

    def _action(self, menu: QMenu, text: str, slot: Callable[[], object],
                shortcut: str | QKeySequence | QKeySequence.StandardKey | None = None, tip: str = "") -> QAction:
        action = QAction(text, self)
        if shortcut is not None:
            action.setShortcut(QKeySequence(shortcut))
        action.setStatusTip(tip)
        action.triggered.connect(slot)
        menu.addAction(action)
        self.addAction(action)  # shortcuts work while the menu bar is hidden, too
        return action

    def _build_menus(self) -> None:
        bar = self.menuBar()
        file_menu = bar.addMenu("&File")
        self._action(file_menu, "&Open profile…", self.choose_profile, QKeySequence.StandardKey.Open,
                     "Open a calibration profile (.safetensors)")
        file_menu.addSeparator()
        self._action(file_menu, "&Quit", self.close, QKeySequence.StandardKey.Quit)

        view = bar.addMenu("&View")
        self._action(view, "&Heatmap", lambda: self.tabs.setCurrentWidget(self.heatmap), "Ctrl+1")
        self._action(view, "&Layer heads", lambda: self.tabs.setCurrentWidget(self.small_multiples), "Ctrl+2")
        self._action(view, "Toggle mask &outline", self.heatmap.toggle_outline, "M")
        view.addSeparator()
        for dock in self.docks.values():
            view.addAction(dock.toggleViewAction())

        nav = bar.addMenu("&Navigate")
        m = self.model
        self._action(nav, "Lower threshold", lambda: m.step_threshold(-1), "[", "One level lower τ (sparser)")
        self._action(nav, "Raise threshold", lambda: m.step_threshold(1), "]", "One level higher τ (denser)")
        self._action(nav, "Lower threshold ×10", lambda: m.step_threshold(-10), "Shift+[")
        self._action(nav, "Raise threshold ×10", lambda: m.step_threshold(10), "Shift+]")
        nav.addSeparator()
        self._action(nav, "Previous layer", lambda: m.move_selection(layers=-1), "Up")
        self._action(nav, "Next layer", lambda: m.move_selection(layers=1), "Down")
        self._action(nav, "Previous head", lambda: m.move_selection(heads=-1), "Left")
        self._action(nav, "Next head", lambda: m.move_selection(heads=1), "Right")
        self._action(nav, "Previous step bin", lambda: m.move_selection(bins=-1), "PgUp")
        self._action(nav, "Next step bin", lambda: m.move_selection(bins=1), "PgDown")

        help_menu = bar.addMenu("&Help")
        self._action(help_menu, "&About", self._about)

    # -- profiles -----------------------------------------------------------------------------------------
    def choose_profile(self) -> None:
        """File → Open profile: a dialog that starts in the folder used last."""
        folder = str(self.settings.value("recent_folder", str(Path.home())))
        path, _ = QFileDialog.getOpenFileName(self, "Open calibration profile", folder, PROFILE_FILTER)
        if path:
            self.open_profile(path)

    def open_profile(self, path: str | Path) -> bool:
        """Open ``path``; on a bad file show one message box and keep the profile already open."""
        try:
            self.model.open(path)
        except ProfileError as error:
            QMessageBox.critical(self, "Cannot open profile", str(error))
            return False
        folder = str(Path(path).resolve().parent)
        self.settings.setValue("recent_folder", folder)
        self.settings.setValue("last_profile", str(Path(path).resolve()))
        return True

    def _on_profile(self) -> None:
        profile = self.model.profile
        meta = profile.meta
        self.centre.setCurrentWidget(self.tabs)
        self.setWindowTitle(f"{profile.path.name} — CalibAtt Studio")
        self.profile_label.setText(f"{profile.path.name}  ({meta.model.get('name', '?')})")
        self.profile_label.setToolTip(str(profile.path))
        f, h, w = meta.grid
        self.grid_label.setText(f"grid {f}×{h}×{w} = {meta.tokens:,} tokens · {meta.nq}×{meta.nk} blocks of "
                                f"{meta.block_size[0]} · {meta.layers} layers × {meta.heads} heads · "
                                f"{meta.bins} bins")
        self._update_status()

    def _update_status(self, *_: object) -> None:
        stats = self.model.stats()
        if stats is None:
            return
        self.density_label.setText(f"density {stats.density:.1%} at τ {stats.applied:.5f} · "
                                   f"predicted {stats.speedup.speedup:.2f}×")

    # -- drag and drop --------------------------------------------------------------------------------------
    @staticmethod
    def _dropped_profile(event: QDragEnterEvent | QDropEvent) -> str | None:
        urls = event.mimeData().urls() if event.mimeData().hasUrls() else []
        for url in urls:
            if url.isLocalFile() and url.toLocalFile().lower().endswith(".safetensors"):
                return url.toLocalFile()
        return None

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:  # noqa: N802 (Qt override)
        if self._dropped_profile(event):
            event.acceptProposedAction()
        else:
            event.ignore()

    def dropEvent(self, event: QDropEvent) -> None:  # noqa: N802 (Qt override)
        path = self._dropped_profile(event)
        if path:
            event.acceptProposedAction()
            self.open_profile(path)

    # -- state ----------------------------------------------------------------------------------------------
    def _restore(self) -> None:
        geometry = self.settings.value("window/geometry")
        state = self.settings.value("window/state")
        if isinstance(geometry, QByteArray):
            self.restoreGeometry(geometry)
        else:
            self.resize(1500, 920)
        if isinstance(state, QByteArray):
            self.restoreState(state)

    def save_state(self) -> None:
        """Remember geometry, dock layout and the threshold (called on close)."""
        self.settings.setValue("window/geometry", self.saveGeometry())
        self.settings.setValue("window/state", self.saveState())
        self.settings.setValue("threshold", self.model.threshold)
        self.settings.sync()

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 (Qt override)
        if self.persist:
            self.save_state()
        super().closeEvent(event)

    def _about(self) -> None:
        QMessageBox.about(self, "About CalibAtt Studio",
                          f"<b>CalibAtt Studio</b> {__version__}<br>Calibrated block-sparse attention for "
                          f"text-to-video diffusion transformers.<br><br>Shortcuts: [ / ] threshold, "
                          f"arrows layer/head, PgUp/PgDn step bin, M mask outline, Ctrl+O open.")
