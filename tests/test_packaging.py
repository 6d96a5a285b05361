"""Installability: one ``calibstudio`` namespace, from the editable install and from a built wheel."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TORCH_FREE = ["calibstudio", "calibstudio.cli", "calibstudio.engine.profile", "calibstudio.engine.protocol",
              "calibstudio.app"]


def _python(code: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **env}, cwd=ROOT.parent)


def test_torch_free_modules_do_not_import_torch():
    code = ("import importlib, sys\n"
            f"for name in {TORCH_FREE!r}: importlib.import_module(name)\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")
    result = _python(code)
    assert result.returncode == 0, result.stderr


def test_profile_cli_does_not_import_torch(tmp_path):
    import numpy as np

    from calibstudio.engine.profile import build_profile

    path = tmp_path / "p.safetensors"
    mass = np.random.default_rng(0).random((2, 1, 1, 4, 4))
    build_profile(path, mass, {"model": {"name": "x"}, "grid": (1, 4, 8), "block_size": (8, 8)}).close()
    code = ("import sys\nfrom calibstudio.cli import main\n"
            f"assert main(['profile', 'show', {str(path)!r}]) == 0\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")
    result = _python(code)
    assert result.returncode == 0, result.stderr


def _package_dirs() -> set[str]:
    """Every folder of the source tree that is a Python package, as its dotted name."""
    names = set()
    roots = {"app": "calibstudio.app", "engine": "calibstudio.engine", "kernels": "calibstudio.kernels",
             "resources": "calibstudio.resources", "packaging/calibstudio": "calibstudio"}
    for folder, dotted in roots.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder)
            names.add(".".join([dotted, *rel.parts]))
    return names


@pytest.mark.slow
def test_wheel_holds_one_namespace_and_imports(tmp_path):
    build = subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path),
                            str(ROOT)], capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stdout[-2000:] + build.stderr[-2000:]
    (wheel,) = tmp_path.glob("calibstudio-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        archive.extractall(tmp_path / "site")
    top = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert top == {"calibstudio"}, f"unexpected top-level entries in the wheel: {top}"
    packaged = {os.path.dirname(n).replace("/", ".") for n in names if n.endswith("__init__.py")}
    assert _package_dirs() <= packaged, f"packages missing from pyproject.toml: {_package_dirs() - packaged}"
    code = ("import calibstudio, calibstudio.engine.profile, calibstudio.cli\n"
            "print(calibstudio.__file__)")
    result = _python(code, PYTHONPATH=str(tmp_path / "site"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().startswith(str(tmp_path / "site"))


def test_run_from_the_checkout_root_the_kernels_folder_does_not_shadow_hugging_faces(tmp_path):
    """`python -m calibstudio ...` from the repository root (as the studio starts its engine) puts the root
    on sys.path; its `kernels/` folder must not stand in for the `kernels` package diffusers imports."""
    root = Path(__file__).resolve().parents[1]
    code = ("import calibstudio, importlib.util; spec = importlib.util.find_spec('kernels'); "
            "print(spec.origin if spec else 'none')")
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    assert Path(out.stdout.strip()) != root / "kernels" / "__init__.py"
