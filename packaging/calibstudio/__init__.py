"""CalibAtt Studio: calibrated block-sparse attention for text-to-video diffusion transformers.

The package is one namespace mapped onto the repository's top-level folders
(see ``pyproject.toml``): ``calibstudio.app`` (the studio, never imports torch),
``calibstudio.engine`` (calibration, generation, profile, protocol) and
``calibstudio.kernels`` (block-sparse attention). Importing ``calibstudio``
itself is cheap and torch-free.
"""

__version__ = "0.1.0"


def __getattr__(name: str):  # noqa: ANN202 - lazy so `import calibstudio` stays torch-free
    if name == "apply_profile":
        from calibstudio.engine.api import apply_profile

        return apply_profile
    raise AttributeError(f"module 'calibstudio' has no attribute {name!r}")
