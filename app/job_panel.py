"""The job panel: what to run (model, prompt, seed, steps, size, frames, profile, τ) and the buttons that run it.

It validates a request before sending it (one sentence per problem, next to the buttons), shows
the running job's progress with an ETA, and offers Cancel. Buttons follow the job and engine
state: nothing can be started while a job runs or while the engine is down. The threshold is the
same τ as the threshold slider (both edit the :class:`ProfileModel`), and the profile field follows
the profile open in the window, so "calibrate → look → compare" needs no retyping.
"""

from __future__ import annotations

import random
from pathlib import Path

from PySide6.QtCore import QSettings, Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from calibstudio.app import theme
from calibstudio.app.engine_client import READY, engine_state_text
from calibstudio.app.job_request import (
    BLOCK_SIZES,
    BUNDLED_MODELS,
    DEFAULT_MODEL,
    KINDS,
    MAX_FRAMES,
    MAX_SIDE,
    MAX_STEPS,
    JobRequest,
    size_rule,
    validate,
)
from calibstudio.app.job_runner import JobRunner
from calibstudio.app.profile_model import ProfileModel
from calibstudio.app.threshold_panel import ThresholdSpinBox
from calibstudio.engine.models.demo.folder import default_folder, saved_defaults

SEED_MAX = 2**31 - 1
BUTTON_TEXT = {"calibrate": "Calibrate", "generate": "Generate", "compare": "Compare"}
BUTTON_TIPS = {
    "calibrate": "Run the model on the calibration prompts and write a profile (Ctrl+K)",
    "generate": "Generate one clip, dense or sparse from the profile (Ctrl+G)",
    "compare": "Dense and sparse from the same seed, in lockstep, timed step by step (Ctrl+R)",
}


def format_eta(seconds: float | None) -> str:
    """``m:ss`` (or ``h:mm:ss``) for an ETA; ``…`` while it is not known yet, ``<0:01`` when nearly done."""
    if seconds is None:
        return "…"
    if 0 < seconds < 0.5:
        return "<0:01"
    seconds = max(int(round(seconds)), 0)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _spin(low: int, high: int, value: int, tip: str, suffix: str = "") -> QSpinBox:
    box = QSpinBox()
    box.setRange(low, high)
    box.setValue(value)
    box.setToolTip(tip)
    box.setSuffix(suffix)
    box.setKeyboardTracking(False)
    return box


class JobPanel(QWidget):
    """Form + Calibrate / Generate / Compare + progress and Cancel, driving one :class:`JobRunner`.

    ``message_changed(text)`` repeats every message it shows, for the status bar.
    """

    message_changed = Signal(str)

    def __init__(self, runner: JobRunner, model: ProfileModel, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.runner = runner
        self.profile_model = model
        self._defaults_for: str | None = None  # apply the engine's defaults when this model has loaded
        self._shipped_profile: str | None = None  # the loaded model's own profile, when it ships one

        self.model_box = QComboBox()
        self.model_box.setEditable(True)
        self.model_box.addItems(BUNDLED_MODELS)
        self.model_box.setCurrentText(DEFAULT_MODEL)
        self.model_box.setToolTip("The bundled demo model, the tiny random test model, a local diffusers Wan folder, "
                                  "or a demo model folder exported by its training")
        self.model_box.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        self.model_folder_button = QToolButton()
        self.model_folder_button.setText("…")
        self.model_folder_button.setToolTip("Choose a local diffusers model folder (e.g. Wan2.1-T2V-1.3B-Diffusers)")
        self.prompt_edit = QPlainTextEdit()
        self.prompt_edit.setPlaceholderText("a red circle bouncing over a blue background")
        self.prompt_edit.setTabChangesFocus(True)
        self.prompt_edit.setFixedHeight(self.fontMetrics().lineSpacing() * 3 + 12)
        self.negative_edit = QLineEdit()
        self.negative_edit.setPlaceholderText("optional")
        self.seed_box = _spin(0, SEED_MAX, 0, "Noise seed: dense and sparse share it")
        self.dice = QToolButton()
        self.dice.setText("⚄")
        self.dice.setToolTip("A random seed")
        self.steps_box = _spin(1, MAX_STEPS, 20, "Denoising steps")
        self.width_box = _spin(1, MAX_SIDE, 64, "Width in pixels", " px")
        self.height_box = _spin(1, MAX_SIDE, 64, "Height in pixels", " px")
        self.frames_box = _spin(1, MAX_FRAMES, 16, "Frames")
        self.profile_edit = QLineEdit()
        self.profile_edit.setPlaceholderText("profile.safetensors")
        self.profile_edit.setToolTip("Profile to read (generate sparse, compare) or to write (calibrate)")
        self.profile_button = QToolButton()
        self.profile_button.setText("…")
        self.profile_button.setToolTip("Choose a profile file")
        self.threshold_box = ThresholdSpinBox(model)
        self.threshold_box.setToolTip("Retained-mass threshold τ, the same as the threshold slider")
        self.dense_steps_box = _spin(0, MAX_STEPS, 0, "Run the first steps of the sparse clip dense: they decide "
                                     "where things are, so the sparse clip stays closer to the dense one, for "
                                     "less speedup", " steps")
        self.compile_box = QCheckBox("compile")
        self.compile_box.setToolTip("torch.compile the transformer for generate and compare: faster steps after a "
                                    "one-off compile (tens of seconds on a CPU), which an untimed first step pays")
        self.mode_box = QComboBox()
        self.mode_box.addItems(["sparse", "dense"])
        self.mode_box.setToolTip("What Generate makes: sparse (through the profile at τ) or dense")
        self.bins_box = _spin(1, 64, 4, "Calibration: groups of steps that share one mask")
        self.block_box = QComboBox()
        self.block_box.addItems([str(b) for b in BLOCK_SIZES])
        self.block_box.setCurrentText("128")
        self.block_box.setToolTip("Calibration: tokens per attention block (128 for real models; "
                                  "smaller for the tiny model's short sequences)")
        self.error_bound_box = QDoubleSpinBox()
        self.error_bound_box.setRange(0.0, 1.0)
        self.error_bound_box.setDecimals(3)
        self.error_bound_box.setSingleStep(0.01)
        self.error_bound_box.setSpecialValueText("off")
        self.error_bound_box.setKeyboardTracking(False)
        self.error_bound_box.setToolTip(
            "Calibration: the relative attention-output error a head may have. A second dense pass measures each "
            "head's error at τ 0.9-0.999 and raises the τ of the heads over it (off: attention mass only). "
            "Filled with the model's bound when a model loads")

        self.buttons = {kind: QPushButton(BUTTON_TEXT[kind]) for kind in KINDS}
        for kind, button in self.buttons.items():
            button.setObjectName(f"run_{kind}")
            button.setToolTip(BUTTON_TIPS[kind])
            button.clicked.connect(lambda _=False, k=kind: self.run(k))
        self.buttons["compare"].setDefault(True)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Stop the running job at its next step; it leaves no files (Esc)")
        self.cancel_button.clicked.connect(self.cancel)
        self.progress = QProgressBar()
        self.progress.setTextVisible(False)
        self.progress.setFixedHeight(8)
        self.progress_label = QLabel("idle")
        self.progress_label.setObjectName("progress_label")
        self.progress_label.setStyleSheet(f"color: {theme.DIM_TEXT};")
        self.message = QLabel()
        self.message.setObjectName("job_message")
        self.message.setWordWrap(True)
        self.message.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        self._layout()
        self.model_folder_button.clicked.connect(self.choose_model_folder)
        self.profile_button.clicked.connect(self.choose_profile)
        self.dice.clicked.connect(lambda: self.seed_box.setValue(random.randint(0, SEED_MAX)))
        self.model_box.activated.connect(lambda _: self._model_chosen())
        self.model_box.lineEdit().editingFinished.connect(self._model_chosen)
        self._sync_threshold()
        model.threshold_changed.connect(self._sync_threshold)
        model.profile_changed.connect(self._profile_opened)
        self.threshold_box.valueChanged.connect(model.set_threshold)
        self.dense_steps_box.valueChanged.connect(model.set_dense_steps)
        runner.busy_changed.connect(lambda _: self.update_enabled())
        runner.job_started.connect(self._job_started)
        runner.job_progress.connect(self._job_progress)
        runner.job_finished.connect(self._job_finished)
        runner.job_failed.connect(self._job_failed)
        runner.job_cancelled.connect(lambda kind: self._job_ended(f"{kind} cancelled; nothing was written"))
        runner.model_loaded.connect(self._model_loaded)
        runner.client.state_changed.connect(lambda _: self.update_enabled())
        # The bundled model's own defaults (read without torch) until the engine's arrive with the model:
        # a job sent before then asks for the clip the model was made for.
        self._fill_form(saved_defaults(default_folder()))
        self._apply_size_steps()
        self._profile_opened()  # a profile opened before the panel existed is the job's profile too
        self.update_enabled()

    def _layout(self) -> None:
        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        form.addRow("Model", self._row(self.model_box, self.model_folder_button))
        form.addRow("Prompt", self.prompt_edit)
        form.addRow("Negative", self.negative_edit)
        form.addRow("Seed", self._row(self.seed_box, self.dice))
        form.addRow("Steps", self.steps_box)
        size = QHBoxLayout()
        size.setContentsMargins(0, 0, 0, 0)
        size.addWidget(self.width_box, 1)
        size.addWidget(QLabel("×"))
        size.addWidget(self.height_box, 1)
        form.addRow("Size", self._wrap(size))
        form.addRow("Frames", self.frames_box)
        form.addRow("Profile", self._row(self.profile_edit, self.profile_button))
        form.addRow("Threshold τ", self.threshold_box)
        form.addRow("Dense first", self._row(self.dense_steps_box, self.compile_box))
        form.addRow("Generate", self.mode_box)
        calibration = QHBoxLayout()
        calibration.setContentsMargins(0, 0, 0, 0)
        calibration.addWidget(QLabel("bins"))
        calibration.addWidget(self.bins_box, 1)
        calibration.addWidget(QLabel("block"))
        calibration.addWidget(self.block_box, 1)
        form.addRow("Calibration", self._wrap(calibration))
        form.addRow("Error bound", self.error_bound_box)

        buttons = QGridLayout()
        for column, kind in enumerate(KINDS):
            buttons.addWidget(self.buttons[kind], 0, column)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(8, 8, 8, 8)
        layout.addLayout(form)
        layout.addLayout(buttons)
        progress = QHBoxLayout()
        progress.addWidget(self.progress, 1)
        progress.addWidget(self.cancel_button)
        layout.addLayout(progress)
        layout.addWidget(self.progress_label)
        layout.addWidget(self.message)
        layout.addStretch(1)

    @staticmethod
    def _wrap(inner: QHBoxLayout) -> QWidget:
        widget = QWidget()
        widget.setLayout(inner)
        return widget

    def _row(self, main: QWidget, button: QWidget) -> QWidget:
        row = QHBoxLayout()
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(main, 1)
        row.addWidget(button)
        return self._wrap(row)

    # -- the request --------------------------------------------------------------------------------------
    def request(self) -> JobRequest:
        """The job the form describes now."""
        return JobRequest(
            model=self.model_box.currentText().strip(), prompt=self.prompt_edit.toPlainText().strip(),
            negative_prompt=self.negative_edit.text().strip(), seed=self.seed_box.value(),
            steps=self.steps_box.value(), height=self.height_box.value(), width=self.width_box.value(),
            frames=self.frames_box.value(), profile=self.profile_edit.text().strip(),
            threshold=self.profile_model.threshold, dense_steps=self.dense_steps_box.value(),
            compile=self.compile_box.isChecked(), mode=self.mode_box.currentText(),
            bins=self.bins_box.value(), block=int(self.block_box.currentText()),
            error_bound=self.error_bound_box.value())

    def run(self, kind: str) -> bool:
        """Validate and start a ``kind`` job; False (with the reasons shown) if it cannot start."""
        if self.runner.busy:
            self.show_message("a job is running: wait for it or cancel it (Esc)", error=True)
            return False
        if not self.runner.client.is_ready:
            self.show_message("the engine is not running: restart it first", error=True)
            return False
        request = self.request()
        problems = validate(kind, request)
        if problems:
            self.show_message(f"Cannot {kind}: " + "; ".join(problems) + ".", error=True)
            return False
        if not self.runner.start(kind, request):
            self.show_message(f"Cannot {kind} now: the engine is busy or not ready", error=True)
            return False
        return True

    def cancel(self) -> bool:
        """Cancel the running job (Esc); False if none runs."""
        if not self.runner.cancel():
            return False
        self.progress_label.setText(f"{self.progress_label.text()} — cancelling…")
        return True

    def preload(self) -> None:
        """Load the chosen model on the engine now; its default size and steps fill the form if the user
        has not set them yet (first run)."""
        self.runner.preload(self.request().model)

    def show_message(self, text: str, error: bool = False) -> None:
        colour = theme.ERROR_TEXT if error else theme.TEXT
        self.message.setStyleSheet(f"color: {colour};")
        self.message.setText(text)
        self.message_changed.emit(text)

    def update_enabled(self) -> None:
        """Buttons follow the job and the engine: start only when idle and ready, cancel only while busy."""
        ready = self.runner.client.state == READY
        for button in self.buttons.values():
            button.setEnabled(ready and not self.runner.busy)
        self.cancel_button.setEnabled(ready and self.runner.busy)
        if not self.runner.busy:
            self.progress.setRange(0, 1)
            self.progress.setValue(0)
            model = self.runner.loaded_model
            self.progress_label.setText("idle · " + (f"model {model} loaded" if model else "no model loaded yet")
                                        if ready else f"engine {engine_state_text(self.runner.client)}")

    # -- pickers ------------------------------------------------------------------------------------------
    def choose_model_folder(self) -> None:
        start = self.model_box.currentText() if Path(self.model_box.currentText()).is_dir() else str(Path.home())
        folder = QFileDialog.getExistingDirectory(self, "Choose a diffusers model folder", start)
        if folder:
            self.set_model(folder)

    def choose_profile(self) -> None:
        current = self.profile_edit.text().strip()
        start = current or str(Path.home() / "profile.safetensors")
        path, _ = QFileDialog.getSaveFileName(self, "Profile to read or write", start,
                                              "Calibration profiles (*.safetensors);;All files (*)",
                                              options=QFileDialog.Option.DontConfirmOverwrite)
        if path:
            self.profile_edit.setText(path)

    # -- model and profile --------------------------------------------------------------------------------
    def set_model(self, model: str) -> None:
        """Choose ``model`` as the user would: the engine loads it and its defaults fill the form."""
        self.model_box.setCurrentText(model)
        self._model_chosen()

    def _model_chosen(self) -> None:
        model = self.model_box.currentText().strip()
        if model and model != self.runner.loaded_model and model != self._defaults_for:
            self._defaults_for = model
            self._apply_size_steps()
            self.runner.preload(model)

    def _apply_size_steps(self) -> None:
        """Spin-box steps that match the model's size rule, so the arrows only give possible sizes."""
        rule = size_rule(self.model_box.currentText().strip())
        for box in (self.width_box, self.height_box):
            box.setSingleStep(rule.side_multiple)
        self.frames_box.setSingleStep(rule.frame_step)

    def _model_loaded(self, spec: str, defaults: dict) -> None:
        current = self.runner.current
        before_a_job = current is not None and current.then is not None
        if spec == self._defaults_for and not before_a_job:  # never change the form under a job just sent
            self._defaults_for = None
            self._fill_form(defaults)
            self._offer_shipped_profile(defaults.get("profile"))
            self.show_message(f"model {spec} loaded: {defaults.get('width')}×{defaults.get('height')}, "
                              f"{defaults.get('frames')} frames, {defaults.get('steps')} steps by default")
        self.update_enabled()

    def _fill_form(self, defaults: dict) -> None:
        """A model's defaults into the form: size, frames, steps, dense first steps and error bound (a model
        that names no dense steps or bound has none: the previous model's must not carry over)."""
        defaults = {"dense_steps": 0, **defaults}
        for key, box in (("height", self.height_box), ("width", self.width_box), ("frames", self.frames_box),
                         ("steps", self.steps_box), ("dense_steps", self.dense_steps_box)):
            if isinstance(defaults.get(key), int):
                box.setValue(defaults[key])
        bound = defaults.get("error_bound")
        self.error_bound_box.setValue(float(bound) if isinstance(bound, (int, float)) else 0.0)

    def _offer_shipped_profile(self, shipped: object) -> None:
        """Make a model's shipped profile the job's profile (compare at once) when the field is empty or
        holds the previous model's shipped one; never replace a profile the user chose."""
        text = self.profile_edit.text().strip()
        if not text or text == self._shipped_profile:
            self.profile_edit.setText(shipped if isinstance(shipped, str) else "")
        self._shipped_profile = shipped if isinstance(shipped, str) else None

    def _profile_opened(self) -> None:
        profile = self.profile_model.profile
        if profile is not None:
            self.profile_edit.setText(str(profile.path))

    def _sync_threshold(self, *_: object) -> None:
        self.threshold_box.blockSignals(True)
        self.threshold_box.setValue(self.profile_model.threshold)
        self.threshold_box.blockSignals(False)

    # -- job events ---------------------------------------------------------------------------------------
    def _job_started(self, kind: str) -> None:
        self.progress.setRange(0, 0)  # busy until the first progress event says how long
        self.progress_label.setText(f"{kind}: starting…")
        self.show_message("")

    def _job_progress(self, phase: str, step: int, total: int, eta: float | None) -> None:
        self.progress.setRange(0, max(total, 1))
        self.progress.setValue(min(step, total))
        kind = self.runner.current.user_kind if self.runner.current else phase
        what = "loading the model" if phase == "load" else "step" if phase == kind else phase
        label = f"{kind}: {what} {step}/{total}"
        if step < total:
            label += f" · ETA {format_eta(eta)}"
        self.progress_label.setText(label)

    def _job_finished(self, kind: str, payload: dict) -> None:
        if kind == "load_model":
            return
        seconds = payload.get("seconds", 0.0)
        if kind == "calibrate":
            text = f"calibrated in {seconds:.1f} s → {payload.get('profile')}"
        elif kind == "compare":
            text = f"compare done in {seconds:.1f} s: measured {payload.get('speedup', 0):.2f}× (see Speed)"
        else:
            text = f"generated in {seconds:.1f} s → {payload.get('video')}"
        self._job_ended(text)

    def _job_failed(self, kind: str, code: str, message: str) -> None:
        self._job_ended(f"{kind} failed ({code}): {message}", error=True)

    def _job_ended(self, text: str, error: bool = False) -> None:
        self.update_enabled()
        self.show_message(text, error=error)

    # -- settings -----------------------------------------------------------------------------------------
    def save_settings(self, settings: QSettings) -> None:
        """Remember the form (not the threshold: the window keeps that)."""
        values = {"model": self.model_box.currentText(), "prompt": self.prompt_edit.toPlainText(),
                  "negative": self.negative_edit.text(), "seed": self.seed_box.value(),
                  "steps": self.steps_box.value(), "width": self.width_box.value(),
                  "height": self.height_box.value(), "frames": self.frames_box.value(),
                  "profile": self.profile_edit.text(), "mode": self.mode_box.currentText(),
                  "bins": self.bins_box.value(), "block": self.block_box.currentText(),
                  "dense_steps": self.dense_steps_box.value(), "error_bound": self.error_bound_box.value(),
                  "compile": self.compile_box.isChecked()}
        for key, value in values.items():
            settings.setValue(f"job/{key}", value)

    def restore_settings(self, settings: QSettings) -> bool:
        """Fill the form from the last session; False (and the engine's defaults on first load) if none."""
        if settings.value("job/model") is None:
            self._defaults_for = self.model_box.currentText().strip()
            return False
        text = {"model": self.model_box.setCurrentText, "negative": self.negative_edit.setText,
                "profile": self.profile_edit.setText, "prompt": self.prompt_edit.setPlainText,
                "mode": self.mode_box.setCurrentText, "block": self.block_box.setCurrentText}
        numbers = {"seed": self.seed_box, "steps": self.steps_box, "width": self.width_box,
                   "height": self.height_box, "frames": self.frames_box, "bins": self.bins_box,
                   "dense_steps": self.dense_steps_box, "error_bound": self.error_bound_box}
        for key, setter in text.items():
            value = settings.value(f"job/{key}")
            if value is not None:
                setter(str(value))
        for key, box in numbers.items():
            try:
                box.setValue(type(box.value())(settings.value(f"job/{key}", box.value())))  # int or float box
            except (TypeError, ValueError):
                pass
        self.compile_box.setChecked(str(settings.value("job/compile", False)).lower() == "true")  # QSettings: text
        self._apply_size_steps()
        return True
