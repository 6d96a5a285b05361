"""CPU runs keep freed memory in the heap, so activations re-allocated every layer stop page-faulting."""

from __future__ import annotations

import resource

import pytest
import torch

from calibstudio.engine.cpu_allocator import keep_freed_memory


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
    first = _faults(_layer)  # maps the pages once (30k faults of 4 KiB)
    later = [_faults(_layer) for _ in range(8)][2:]
    # glibc's default maps and faults all three blocks again every time; kept, most are reused in place
    assert first > 5000 and sum(later) / len(later) < first / 2, (first, later)


def test_a_model_loaded_on_the_cpu_asks_for_it(monkeypatch):
    from calibstudio.engine.models import registry

    calls = []
    monkeypatch.setattr(registry, "keep_freed_memory", lambda: calls.append(1) or True)
    registry.load_model("demo", "cpu")
    assert calls == [1]
