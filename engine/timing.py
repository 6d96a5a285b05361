"""The one place that times denoising steps: CUDA events on a GPU, the wall clock on the CPU."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch


class StepTimer:
    """Times blocks of work on ``device``; ``measure()`` yields, then ``last_ms`` holds the time.

    On CUDA the events are read right after the block, which waits for the GPU once per step; that
    sync sits between steps, never inside the attention path.
    """

    def __init__(self, device: torch.device | str) -> None:
        self.cuda = torch.device(device).type == "cuda"
        self.last_ms = 0.0

    @contextmanager
    def measure(self) -> Iterator[None]:
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            yield
            end.record()
            end.synchronize()
            self.last_ms = start.elapsed_time(end)
        else:
            began = time.perf_counter()
            yield
            self.last_ms = 1e3 * (time.perf_counter() - began)
