"""Render every studio view of a profile to PNG, for the docs and for people reviewing the GUI.

``python -m calibstudio.app.screenshots OUTDIR [--profile FILE]`` writes ``main_window.png``,
``heatmap.png`` (mask outline and dimmed dropped blocks), ``overview.png``, ``small_multiples.png``
and ``threshold.png``. Without ``--profile`` it first writes a Wan-2.1-1.3B-sized synthetic profile
(480p/81f: 21 x 30 x 52 tokens, 30 layers x 12 heads, about a minute on 2 cores).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

# (file name, widget size); each view is shown alone, the way a test shows it
VIEWS = {
    "main_window": (1600, 1000),
    "heatmap": (1100, 960),
    "overview": (560, 820),
    "small_multiples": (1500, 900),
    "threshold": (460, 330),
}


def render(profile_path: str | os.PathLike[str], out_dir: str | os.PathLike[str], layer: int | None = None,
           head: int = 0, threshold: float = 0.999) -> list[Path]:
    """Render each view of ``profile_path`` into ``out_dir``; returns the PNG paths."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtCore import QPointF
    from PySide6.QtWidgets import QApplication

    from calibstudio.app.heatmap_view import HeatmapView
    from calibstudio.app.main_window import MainWindow
    from calibstudio.app.overview_view import OverviewView
    from calibstudio.app.profile_model import ProfileModel
    from calibstudio.app.settings import open_settings
    from calibstudio.app.small_multiples import SmallMultiplesView
    from calibstudio.app.studio import install_message_filter
    from calibstudio.app.theme import apply_dark_theme
    from calibstudio.app.threshold_panel import ThresholdPanel

    install_message_filter()
    app = QApplication.instance() or QApplication(["calibstudio-screenshots"])
    apply_dark_theme(app)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = ProfileModel(threshold)
    model.open(profile_path)
    meta = model.profile.meta
    model.select(bin_index=0, layer=meta.layers // 2 if layer is None else layer, head=head)

    written = []
    with tempfile.TemporaryDirectory() as scratch:
        settings = open_settings(str(Path(scratch) / "settings.ini"))
        for name, size in VIEWS.items():
            if name == "main_window":
                widget = MainWindow(settings, model, persist=False)
                widget._on_profile()  # the profile was opened before the window existed
            elif name == "heatmap":
                widget = HeatmapView(model)
                widget.dim_check.setChecked(True)
            elif name == "overview":
                widget = OverviewView(model)
            elif name == "small_multiples":
                widget = SmallMultiplesView(model)
            else:
                widget = ThresholdPanel(model)
            widget.resize(*size)
            widget.show()
            for _ in range(5):
                app.processEvents()
            if name == "heatmap":  # show the hover readout for a block next to the diagonal
                query = meta.nq // 2
                widget.graphics.scene().sigMouseMoved.emit(widget.plot.vb.mapViewToScene(QPointF(query + 1.5,
                                                                                                 query + 0.5)))
            path = out / f"{name}.png"
            if not widget.grab().save(str(path), "PNG"):
                raise OSError(f"could not write {path}")
            written.append(path)
            widget.close()
            widget.deleteLater()
            app.processEvents()
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``OUTDIR [--profile FILE] [--layer L] [--head H] [--threshold T]``."""
    parser = argparse.ArgumentParser(prog="python -m calibstudio.app.screenshots", description=__doc__.split("\n")[0])
    parser.add_argument("out_dir", help="folder for the PNGs")
    parser.add_argument("--profile", help="profile to show (default: a Wan-1.3B-sized synthetic one)")
    parser.add_argument("--layer", type=int, help="layer to show (default: the middle one)")
    parser.add_argument("--head", type=int, default=0, help="head to show (default 0)")
    parser.add_argument("--threshold", type=float, default=0.999, help="threshold (default 0.999)")
    args = parser.parse_args(argv)
    from calibstudio.engine.profile import ProfileError

    try:
        if args.profile:
            paths = render(args.profile, args.out_dir, args.layer, args.head, args.threshold)
        else:
            from calibstudio.engine.synthetic import write_synthetic_profile

            with tempfile.TemporaryDirectory() as scratch:
                profile = write_synthetic_profile(Path(scratch) / "wan-1.3b-480p-synthetic.safetensors",
                                                  (21, 30, 52), layers=30, heads=12, bins=4, steps=50)
                paths = render(profile, args.out_dir, args.layer, args.head, args.threshold)
    except (ProfileError, OSError) as error:
        print(f"screenshots: error: {error}", file=sys.stderr)
        return 1
    for path in paths:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
