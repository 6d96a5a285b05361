"""Suite-wide setup that must run before any test module imports triton."""

import os
import shutil

# Triton reads TRITON_INTERPRET when it is first imported (its own `tl.zeros` & co. are decorated then), so on a
# machine without an NVIDIA GPU the interpreter must be switched on before diffusers/torch pull triton in.
if shutil.which("nvidia-smi") is None:
    os.environ.setdefault("TRITON_INTERPRET", "1")
