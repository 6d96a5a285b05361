"""Start the studio: parse arguments, make the QApplication, show the window (or save a screenshot).

``--screenshot PNG`` renders the main window offscreen with the profile loaded and a head selected,
then exits: for docs and tests, and usable over ssh with no display.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

DEFAULT_SIZE = (1600, 1000)


def build_parser() -> argparse.ArgumentParser:
    """Options of ``calibstudio studio`` (the CLI mirrors them)."""
    parser = argparse.ArgumentParser(prog="calibstudio studio", description="Open the CalibAtt studio.")
    parser.add_argument("--profile", help="calibration profile to open (.safetensors)")
    parser.add_argument("--screenshot", metavar="PNG", help="render the window offscreen to PNG and exit")
    parser.add_argument("--settings", metavar="FILE", help="settings INI file instead of the user's settings")
    parser.add_argument("--threshold", type=float, help="retained-mass threshold in 0.90..0.9999")
    parser.add_argument("--bin", type=int, help="step bin to show")
    parser.add_argument("--layer", type=int, help="layer to show")
    parser.add_argument("--head", type=int, help="head to show")
    parser.add_argument("--size", type=int, nargs=2, default=DEFAULT_SIZE, metavar=("W", "H"),
                        help=f"window size for --screenshot (default {DEFAULT_SIZE[0]} {DEFAULT_SIZE[1]})")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the studio; returns the exit status. Errors before the window exists are one line on stderr."""
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    if args.screenshot and not os.environ.get("QT_QPA_PLATFORM"):
        os.environ["QT_QPA_PLATFORM"] = "offscreen"

    from PySide6.QtWidgets import QApplication

    from calibstudio.app.main_window import MainWindow
    from calibstudio.app.profile_model import ProfileModel
    from calibstudio.app.settings import APPLICATION, ORGANISATION, open_settings, read_float
    from calibstudio.app.theme import apply_dark_theme
    from calibstudio.engine.profile import TAU_MAX, TAU_MIN, ProfileError

    if args.threshold is not None and not TAU_MIN <= args.threshold <= TAU_MAX:
        print(f"calibstudio studio: error: --threshold {args.threshold} is outside {TAU_MIN}..{TAU_MAX}",
              file=sys.stderr)
        return 1
    previous_handler = install_message_filter()
    app = QApplication.instance() or QApplication(["calibstudio"])
    app.setOrganizationName(ORGANISATION)
    app.setApplicationName(APPLICATION)
    apply_dark_theme(app)
    settings = open_settings(args.settings)
    model = ProfileModel(args.threshold if args.threshold is not None
                         else read_float(settings, "threshold", 0.999))
    window = MainWindow(settings, model, persist=not args.screenshot, start_engine=not args.screenshot,
                        threshold_given=args.threshold is not None)
    if args.profile:
        try:
            model.open(args.profile)
        except ProfileError as error:
            print(f"calibstudio studio: error: {error}", file=sys.stderr)
            window.deleteLater()
            return 1
        window.settings.setValue("recent_folder", os.path.dirname(os.path.abspath(args.profile)))
    elif not args.screenshot:
        _reopen_last(window)
    if model.profile is not None:
        meta = model.profile.meta
        layer = args.layer if args.layer is not None else (meta.layers // 2 if args.screenshot else None)
        model.select(bin_index=args.bin, layer=layer, head=args.head)

    if args.screenshot:
        status = _screenshot(app, window, args.screenshot, tuple(args.size))
        restore_message_handler(previous_handler)  # in-process callers (tests) get their own handler back
        return status
    window.show()
    return int(app.exec())


_QT_NOISE = ("propagateSizeHints",)  # the offscreen plugin cannot honour window-manager hints: not a problem


def _qt_message(_mode, _context, message: str) -> None:
    """Qt's own warnings to stderr, minus known noise of the offscreen platform."""
    if not any(noise in message for noise in _QT_NOISE):
        print(message, file=sys.stderr)


def install_message_filter():
    """Route Qt's messages through :func:`_qt_message`; returns the previous handler."""
    from PySide6.QtCore import qInstallMessageHandler

    return qInstallMessageHandler(_qt_message)


def restore_message_handler(previous) -> None:
    """Put back the handler :func:`install_message_filter` replaced."""
    from PySide6.QtCore import qInstallMessageHandler

    qInstallMessageHandler(previous)


def _reopen_last(window) -> None:
    """Reopen the profile of the last session; quietly skip it if it moved or broke."""
    from calibstudio.engine.profile import ProfileError

    last = window.settings.value("last_profile")
    if not last or not os.path.isfile(str(last)):
        return
    try:
        window.model.open(str(last))
    except ProfileError as error:
        window.statusBar().showMessage(f"Could not reopen the last profile: {error}", 10_000)


def _screenshot(app, window, path: str, size: tuple[int, int]) -> int:
    """Lay the window out at ``size``, render it and save a PNG; 1 with one line if it cannot be written."""
    window.resize(*size)
    window.show()
    for _ in range(5):  # layouts settle over a few event-loop turns
        app.processEvents()
    ok = window.grab().save(path, "PNG")
    window.close()
    window.deleteLater()
    app.processEvents()
    if not ok:
        print(f"calibstudio studio: error: could not write the screenshot {path}", file=sys.stderr)
        return 1
    return 0
