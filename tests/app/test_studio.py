"""The studio entry point: screenshot mode, one-line errors, and no torch anywhere in the app."""

from __future__ import annotations

import subprocess
import sys

from calibstudio.app import main


def test_screenshot_mode_writes_a_png(dark_app, tmp_path, small_profile, settings_file):
    png = tmp_path / "window.png"
    status = main(["--profile", str(small_profile), "--screenshot", str(png), "--settings", settings_file,
                   "--layer", "2", "--head", "1", "--threshold", "0.99", "--size", "1200", "800"])
    assert status == 0
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    from PySide6.QtGui import QImage

    image = QImage(str(png))
    assert (image.width(), image.height()) == (1200, 800)
    # a screenshot never changes the user's remembered threshold
    from calibstudio.app.settings import open_settings

    assert open_settings(settings_file).value("threshold") is None


def test_screenshot_of_a_corrupt_profile_fails_with_one_line(dark_app, tmp_path, corrupt_profile, settings_file,
                                                            capsys):
    status = main(["--profile", str(corrupt_profile), "--screenshot", str(tmp_path / "x.png"),
                   "--settings", settings_file])
    assert status == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "truncated" in err[0] and not (tmp_path / "x.png").exists()


def test_importing_the_app_imports_no_torch():
    code = (
        "import importlib, pkgutil, sys\n"
        "import calibstudio.app as app\n"
        "names = [m.name for m in pkgutil.iter_modules(app.__path__, 'calibstudio.app.')]\n"
        "for name in names: importlib.import_module(name)\n"
        "assert len(names) >= 10, names\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "print(len(names))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            env={"QT_QPA_PLATFORM": "offscreen", "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr


def test_every_view_renders_to_png(dark_app, tmp_path, small_profile):
    from calibstudio.app.screenshots import VIEWS, render

    paths = render(small_profile, tmp_path, layer=1, head=2, threshold=0.99)
    assert sorted(p.stem for p in paths) == sorted(VIEWS)
    for path in paths:
        assert path.read_bytes()[:4] == b"\x89PNG" and path.stat().st_size > 5_000


def test_cli_without_pyside6_says_how_to_install(tmp_path):
    code = ("import sys\n"
            "sys.modules['PySide6'] = None  # as if it were not installed\n"
            "from calibstudio.cli import main\n"
            f"sys.exit(main(['studio', '--screenshot', {str(tmp_path / 'x.png')!r}]))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install 'calibstudio[studio]'" in lines[0]
