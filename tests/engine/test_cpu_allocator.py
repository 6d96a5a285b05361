"""CPU runs keep freed memory in the heap, so activations re-allocated every layer stop page-faulting."""

from __future__ import annotations

import resource

import pytest
import torch

from calibstudio.engine.cpu_allocator import keep_freed_memory

LAYER_BYTES = 3 * 40 * 2**20  # the activations _layer touches


def _layer() -> float:
    """A layer's worth of large activations (40 MB each, over glibc's 32 MB mmap threshold), freed at the end."""
    hidden = torch.ones(10 * 2**20)
    scaled = hidden * 2
    return float(torch.nn.functional.gelu(scaled)[0])


def _faults(step) -> int:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    step()
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


def test_repeated_layers_reuse_their_pages():
    if not keep_freed_memory():
        pytest.skip("not glibc: the allocator is left as it is")
    _faults(_layer)  # maps the pages once, unless an earlier test left them in the heap
    later = [_faults(_layer) for _ in range(8)][2:]
    # glibc's default maps and faults every page of all three blocks again each time; kept, most are reused
    pages = LAYER_BYTES // resource.getpagesize()
    assert sum(later) / len(later) < pages / 2, (pages, later)


def test_a_model_loaded_on_the_cpu_asks_for_it(monkeypatch):
    from calibstudio.engine.models import registry

    calls = []
    monkeypatch.setattr(registry, "keep_freed_memory", lambda: calls.append(1) or True)
    registry.load_model("demo", "cpu")
    assert calls == [1]
