"""What a benchmark or evaluation ran on, in words, for the JSON it writes (one wording everywhere)."""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path

# Widest vector unit first. 2-core machines of this workplace differ ~3x in a dense demo-model clip (dense
# attention at its shape: 51 ms in docs/benchmarks/kernels-cpu.json, 182 ms on an AVX2-only AMD EPYC in
# session 24), so a CPU timing is only comparable with one from the same processor.
_VECTOR_UNITS = (("avx512f", "AVX-512"), ("avx2", "AVX2"), ("asimd", "NEON"))


def cpu_model(cpuinfo: str | None = None) -> str:
    """The processor's model name and widest vector unit, e.g. ``"AMD EPYC, AVX2"``, from /proc/cpuinfo
    (``cpuinfo`` overrides it); ``""`` where it cannot be read (not Linux)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return ""
    name = re.search(r"^model name\s*:\s*(.+?)\s*$", cpuinfo, re.M)
    flags = re.search(r"^(?:flags|Features)\s*:\s*(.+)$", cpuinfo, re.M)
    have = set(flags.group(1).split()) if flags else set()
    unit = next((label for flag, label in _VECTOR_UNITS if flag in have), None)
    return ", ".join(part for part in (name.group(1) if name else None, unit) if part)


def device_name(device: str = "cpu") -> str:
    """``"NVIDIA H100 80GB HBM3"`` for a CUDA device, ``"cpu: x86_64, 2 cores, AMD EPYC, AVX2"`` otherwise.

    torch is imported only for a CUDA device, so torch-free tools (the profile benchmark) can use it.
    """
    if str(device).startswith("cuda"):
        import torch

        return torch.cuda.get_device_name(torch.device(device))
    where, model = f"cpu: {platform.processor() or platform.machine()}, {os.cpu_count()} cores", cpu_model()
    return f"{where}, {model}" if model else where
