"""The studio's main window: menus, docks, status bar, drag-and-drop and remembered state.

It wires the panels to one :class:`ProfileModel` (the open profile and τ) and one :class:`JobRunner`
(the engine's jobs) and owns nothing else; everything it remembers goes through the QSettings it
is given (tests pass a temporary file). When the engine stops, a banner says why and offers a
restart; the profile, the settings and the finished results stay.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QByteArray, QSettings, Qt
from PySide6.QtGui import QAction, QCloseEvent, QDragEnterEvent, QDropEvent, QKeySequence
from PySide6.QtWidgets import (
    QDockWidget,
    QFileDialog,
    QInputDialog,
    QLabel,
    QLineEdit,
    QMainWindow,
    QMenu,
    QMessageBox,
    QStackedWidget,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from calibstudio import __version__
from calibstudio.app import theme
from calibstudio.app.engine_banner import EngineBanner
from calibstudio.app.engine_client import READY, EngineClient, default_command, engine_state_text, parse_command
from calibstudio.app.engine_log import EngineLogView
from calibstudio.app.exporter import Exporter
from calibstudio.app.heatmap_view import HeatmapView
from calibstudio.app.job_panel import JobPanel
from calibstudio.app.job_runner import JobRunner
from calibstudio.app.overview_view import OverviewView
from calibstudio.app.preview_panel import PreviewPanel
from calibstudio.app.profile_model import DEFAULT_THRESHOLD, ProfileModel
from calibstudio.app.settings import read_float
from calibstudio.app.small_multiples import SmallMultiplesView
from calibstudio.app.speed_panel import SpeedPanel
from calibstudio.app.threshold_panel import ThresholdPanel
from calibstudio.engine.profile import ProfileError

PROFILE_FILTER = "Calibration profiles (*.safetensors);;All files (*)"
WELCOME = ("<h2>CalibAtt Studio</h2><p>Open a calibration profile to inspect its block masks:<br>"
           "<b>File → Open profile…</b> (Ctrl+O), or drop a <code>.safetensors</code> file here.</p>"
           "<p style='color:{dim}'>No profile yet? <code>calibstudio profile synthetic demo.safetensors</code> "
           "writes one with video-attention structure.</p>")


class MainWindow(QMainWindow):
    """Jobs on the left; heatmap, layer heads, previews and speed in the centre; threshold and overview right.

    ``engine`` is the engine client to use (default: one built from the settings); it is started at
    once when ``start_engine`` is true (the studio), not in tests and screenshots that pass their own.
    """

    def __init__(self, settings: QSettings, model: ProfileModel | None = None, persist: bool = True,
                 parent: QWidget | None = None, engine: EngineClient | None = None,
                 start_engine: bool = False, threshold_given: bool = False) -> None:
        super().__init__(parent)
        self.settings = settings
        self.persist = persist
        self.model = model or ProfileModel(read_float(settings, "threshold", DEFAULT_THRESHOLD))
        # Whether tau was chosen (command line, the last session, the slider, a recommendation already
        # applied): else the recommended threshold of the model a profile was calibrated for applies when it opens.
        self._threshold_chosen = threshold_given or settings.contains("threshold")
        self.engine = engine or EngineClient.from_settings(settings)
        self.engine.setParent(self)
        self.runner = JobRunner(self.engine, self)
        self.setWindowTitle("CalibAtt Studio")
        self.setAcceptDrops(True)
        self.setDockNestingEnabled(True)

        self.heatmap = HeatmapView(self.model)
        self.small_multiples = SmallMultiplesView(self.model)
        self.overview = OverviewView(self.model)
        self.threshold = ThresholdPanel(self.model)
        self.job_panel = JobPanel(self.runner, self.model)
        self.previews = PreviewPanel(self.runner)
        self.speed = SpeedPanel(self.runner)
        self.engine_log = EngineLogView(self.engine)
        self.exporter = Exporter(settings, self.runner, self.model, self)
        self.tabs = QTabWidget()
        self.tabs.setDocumentMode(True)
        self.tabs.addTab(self.heatmap, "Heatmap")
        self.tabs.addTab(self.small_multiples, "Layer heads")
        self.tabs.addTab(self.previews, "Previews")
        self.tabs.addTab(self.speed, "Speed")
        self.welcome = QLabel(WELCOME.format(dim=theme.DIM_TEXT))
        self.welcome.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.welcome.setWordWrap(True)
        self.centre = QStackedWidget()
        self.centre.addWidget(self.welcome)
        self.centre.addWidget(self.tabs)
        self.banner = EngineBanner()
        central = QWidget()
        column = QVBoxLayout(central)
        column.setContentsMargins(0, 0, 0, 0)
        column.setSpacing(4)
        column.addWidget(self.banner)
        column.addWidget(self.centre, 1)
        self.setCentralWidget(central)

        self.docks = {
            "threshold": self._dock("Threshold", self.threshold, Qt.DockWidgetArea.RightDockWidgetArea),
            "overview": self._dock("Overview: layer × head", self.overview, Qt.DockWidgetArea.RightDockWidgetArea),
            "jobs": self._dock("Jobs", self.job_panel, Qt.DockWidgetArea.LeftDockWidgetArea),
            "log": self._dock("Engine log", self.engine_log, Qt.DockWidgetArea.BottomDockWidgetArea),
        }
        self.docks["log"].hide()
        self.resizeDocks([self.docks["threshold"], self.docks["overview"]], [300, 560], Qt.Orientation.Vertical)
        self.resizeDocks([self.docks["threshold"]], [430], Qt.Orientation.Horizontal)
        self.resizeDocks([self.docks["jobs"]], [300], Qt.Orientation.Horizontal)

        self.engine_label = QLabel()
        self.engine_label.setObjectName("status_engine")
        self.profile_label = QLabel("no profile")
        self.grid_label = QLabel()
        self.density_label = QLabel()
        self.density_label.setObjectName("status_density")
        for label in (self.engine_label, self.profile_label, self.grid_label, self.density_label):
            self.statusBar().addPermanentWidget(label)

        self._build_menus()
        self.small_multiples.head_activated.connect(lambda _: self.tabs.setCurrentWidget(self.heatmap))
        self.model.profile_changed.connect(self._on_profile)
        self.model.threshold_changed.connect(self._update_status)
        self.model.dense_steps_changed.connect(self._update_status)
        self.model.threshold_changed.connect(self._threshold_set)
        self._connect_engine()
        self.job_panel.restore_settings(settings)
        self._restore()
        if start_engine:
            self.engine.start()

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
        export_menu = self.exporter.menu(self)
        file_menu.addMenu(export_menu)
        self.previews.export_button.setMenu(export_menu)
        for action in self.exporter.actions.values():
            self.addAction(action)
        file_menu.addSeparator()
        self._action(file_menu, "&Quit", self.close, QKeySequence.StandardKey.Quit)

        view = bar.addMenu("&View")
        self._action(view, "&Heatmap", lambda: self.tabs.setCurrentWidget(self.heatmap), "Ctrl+1")
        self._action(view, "&Layer heads", lambda: self.tabs.setCurrentWidget(self.small_multiples), "Ctrl+2")
        self._action(view, "&Previews", lambda: self.show_tab(self.previews), "Ctrl+3")
        self._action(view, "&Speed", lambda: self.show_tab(self.speed), "Ctrl+4")
        self._action(view, "Toggle mask &outline", self.heatmap.toggle_outline, "M")
        self._action(view, "Play / pause clips", self.previews.toggle_playing, "Space",
                     "Play or pause the dense and sparse clips together")
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

        jobs = bar.addMenu("&Jobs")
        panel = self.job_panel
        self._action(jobs, "&Calibrate", lambda: panel.run("calibrate"), "Ctrl+K", "Calibrate the model into a profile")
        self._action(jobs, "&Generate", lambda: panel.run("generate"), "Ctrl+G", "Generate one clip")
        self._action(jobs, "Compa&re dense vs sparse", lambda: panel.run("compare"), "Ctrl+R",
                     "Dense and sparse from one seed, timed step by step")
        self._action(jobs, "Ca&ncel job", panel.cancel, "Esc", "Stop the running job at its next step")

        engine = bar.addMenu("&Engine")
        self._action(engine, "&Restart engine", self.restart_engine, "Ctrl+Shift+R",
                     "Start the engine again (the profile, settings and results stay)")
        self._action(engine, "&Stop engine", self.engine.stop)
        self._action(engine, "Engine &command…", self.choose_engine_command,
                     tip="Run the engine elsewhere, e.g. ssh gpu-box calibstudio engine --remote")
        engine.addAction(self.docks["log"].toggleViewAction())

        help_menu = bar.addMenu("&Help")
        self._action(help_menu, "&About", self._about)

    # -- profiles -----------------------------------------------------------------------------------------
    def choose_profile(self) -> None:
        """File → Open profile: a dialog that starts in the folder used last."""
        folder = str(self.settings.value("recent_folder", str(Path.home())))
        path, _ = QFileDialog.getOpenFileName(self, "Open calibration profile", folder, PROFILE_FILTER)
        if path:
            self.open_profile(path)

    def open_profile(self, path: str | Path, remember: bool = True) -> bool:
        """Open ``path``; on a bad file show one message box and keep the profile already open.

        ``remember`` records it as the last profile and its folder as the dialogs' folder (not for the
        profile a bundled model ships inside the package)."""
        try:
            self.model.open(path)
        except ProfileError as error:
            QMessageBox.critical(self, "Cannot open profile", str(error))
            return False
        if not remember:
            return True
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
        if not self._threshold_chosen and meta.recommended_threshold is not None:  # however it was opened
            self.model.set_threshold(meta.recommended_threshold)
        f, h, w = meta.grid
        self.grid_label.setText(f"grid {f}×{h}×{w} = {meta.tokens:,} tokens · {meta.nq}×{meta.nk} blocks of "
                                f"{meta.block_size[0]} · {meta.layers} layers × {meta.heads} heads · "
                                f"{meta.bins} bins")
        self._update_status()

    def _update_status(self, *_: object) -> None:
        stats = self.model.stats()
        if stats is None:
            return
        self.density_label.setText(f"density {stats.speedup.density:.1%} at τ {stats.applied:.5f} · "
                                   f"predicted {stats.speedup.speedup:.2f}×")

    # -- engine and jobs -------------------------------------------------------------------------------------
    def _connect_engine(self) -> None:
        self.banner.restart_requested.connect(self.restart_engine)
        self.banner.log_requested.connect(lambda: (self.docks["log"].show(), self.docks["log"].raise_()))
        self.engine.state_changed.connect(self._engine_state)
        self.engine.ready.connect(self._engine_ready)
        self.engine.stopped.connect(self._engine_stopped)
        self.engine.error.connect(self._engine_error)
        self.runner.job_started.connect(self._job_started)
        self.runner.job_finished.connect(self._job_finished)
        self.runner.model_loaded.connect(self._model_loaded)
        self.job_panel.message_changed.connect(lambda text: self.statusBar().showMessage(text, 15_000))
        self.exporter.exported.connect(lambda text: self.statusBar().showMessage(text, 15_000))
        self.exporter.failed.connect(lambda text: QMessageBox.warning(self, "Export", text))
        self._engine_state(self.engine.state)

    def restart_engine(self) -> None:
        """Start the engine again; everything else in the window stays."""
        self.banner.hide()
        self.statusBar().showMessage("Restarting the engine…", 5000)
        self.engine.restart()

    def choose_engine_command(self) -> None:
        """Let the user run the engine elsewhere (e.g. over ssh); empty means the local engine."""
        current = str(self.settings.value("engine/command", ""))
        text, ok = QInputDialog.getText(self, "Engine command", "Command that starts the engine (empty: the "
                                        "local one),\ne.g. ssh gpu-box calibstudio engine --remote",
                                        QLineEdit.EchoMode.Normal, current)
        if not ok:
            return
        try:
            command = parse_command(text) if text.strip() else None
        except ValueError as error:
            QMessageBox.warning(self, "Engine command", str(error))
            return
        self.settings.setValue("engine/command", text.strip())
        self.engine.command = command or default_command()
        self.restart_engine()

    def show_tab(self, widget: QWidget) -> None:
        self.centre.setCurrentWidget(self.tabs)
        self.tabs.setCurrentWidget(widget)

    def _engine_state(self, state: str) -> None:
        text = engine_state_text(self.engine)
        colour = {READY: "#81c784", "starting": "#ffd54f", "off": theme.DIM_TEXT}.get(text, theme.ERROR_TEXT)
        self.engine_label.setText(f"<span style='color:{colour}'>●</span> engine {text}")
        self.engine_label.setToolTip(self.engine.describe_command())
        if state != "stopped":
            self.banner.hide()

    def _engine_ready(self, info: dict) -> None:
        self.statusBar().showMessage(f"Engine ready: {info.get('engine', 'calibstudio')}", 5000)
        self.job_panel.preload()

    def _engine_stopped(self, reason: str) -> None:
        self.banner.show_stopped(reason)
        self.statusBar().showMessage(f"Engine stopped: {reason}")

    def _engine_error(self, command_id: str, code: str, message: str) -> None:
        if not command_id:  # nothing waits for it: say so, the engine keeps running
            self.statusBar().showMessage(f"Engine error ({code}): {message}", 15_000)

    def _job_started(self, kind: str) -> None:
        if kind in ("compare", "generate"):
            self.show_tab(self.previews)

    def _job_finished(self, kind: str, payload: dict) -> None:
        if kind == "calibrate" and isinstance(payload.get("profile"), str):
            self.open_profile(payload["profile"])

    def _threshold_set(self, _threshold: float) -> None:
        self._threshold_chosen = True

    def _model_loaded(self, _spec: str, defaults: dict) -> None:
        """Show the model's shipped profile when nothing is open (and the engine runs on this machine), at
        the model's recommended threshold unless one was chosen."""
        shipped, recommended = defaults.get("profile"), defaults.get("threshold")
        if self.model.profile is None and isinstance(shipped, str) and Path(shipped).is_file():
            opened = self.open_profile(shipped, remember=False)
            if opened and not self._threshold_chosen and isinstance(recommended, float):  # a profile that
                self.model.set_threshold(recommended)  # predates recorded recommendations

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
        """Remember geometry, dock layout, the threshold and the job form (called on close)."""
        self.job_panel.save_settings(self.settings)
        self.settings.setValue("window/geometry", self.saveGeometry())
        self.settings.setValue("window/state", self.saveState())
        self.settings.setValue("threshold", self.model.threshold)
        self.settings.sync()

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 (Qt override)
        if self.persist:
            self.save_state()
        self.previews.set_playing(False)
        self.engine.stop()
        super().closeEvent(event)

    def _about(self) -> None:
        QMessageBox.about(self, "About CalibAtt Studio",
                          f"<b>CalibAtt Studio</b> {__version__}<br>Calibrated block-sparse attention for "
                          f"text-to-video diffusion transformers.<br><br>Shortcuts: [ / ] threshold, "
                          f"arrows layer/head, PgUp/PgDn step bin, M mask outline, Ctrl+O open; "
                          f"Ctrl+K calibrate, Ctrl+G generate, Ctrl+R compare, Esc cancel, Space play/pause, "
                          f"Ctrl+E export side by side, Ctrl+Shift+R restart the engine.")
