"""CalibAtt Studio: calibrated block-sparse attention for text-to-video diffusion transformers.

The package is one namespace mapped onto the repository's top-level folders
(see ``pyproject.toml``): ``calibstudio.app`` (the studio, never imports torch),
``calibstudio.engine`` (calibration, generation, profile, protocol) and
``calibstudio.kernels`` (block-sparse attention). Importing ``calibstudio``
itself is cheap and torch-free.
"""

import sys
from pathlib import Path

__version__ = "0.1.0"


def _unshadow() -> None:
    """Drop a calibstudio source checkout's root from ``sys.path`` (``python -m`` run there puts it first).

    Its top-level ``kernels/`` folder (installed as ``calibstudio.kernels``) would shadow Hugging Face's
    ``kernels`` package, which transformers requires and diffusers imports when it is installed: loading
    any model then fails with "cannot import name ... from 'kernels'". Only a folder holding our own
    layout (``kernels/layout.py`` beside ``packaging/calibstudio``) is dropped.
    """
    for entry in list(sys.path):
        root = Path(entry or ".")
        if (root / "kernels" / "layout.py").is_file() and (root / "packaging" / "calibstudio").is_dir():
            sys.path.remove(entry)


_unshadow()


def __getattr__(name: str):  # noqa: ANN202 - lazy so `import calibstudio` stays torch-free
    if name == "apply_profile":
        from calibstudio.engine.api import apply_profile

        return apply_profile
    raise AttributeError(f"module 'calibstudio' has no attribute {name!r}")
