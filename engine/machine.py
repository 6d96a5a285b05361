"""What a benchmark or evaluation ran on, in words, for the JSON it writes (one wording everywhere)."""

from __future__ import annotations

import os
import platform


def device_name(device: str = "cpu") -> str:
    """``"NVIDIA H100 80GB HBM3"`` for a CUDA device, ``"cpu: x86_64, 2 cores"`` otherwise.

    torch is imported only for a CUDA device, so torch-free tools (the profile benchmark) can use it.
    """
    if str(device).startswith("cuda"):
        import torch

        return torch.cuda.get_device_name(torch.device(device))
    return f"cpu: {platform.processor() or platform.machine()}, {os.cpu_count()} cores"
