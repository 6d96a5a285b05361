"""``torch.compile`` for generation jobs: the transformer's forward compiled once per model class.

The compiled forward is set as an instance attribute for the length of a job (so dense, sparse and
every later job share one dynamo cache: the hook keeps its per-step choices out of the graph, see
``attention_hook``), and the first call of each variant (no hook / hook installed) compiles. Jobs
that time steps run one throwaway step of each variant first, so compilation is not timed.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator

import torch


@functools.cache
def _compiled(forward: Callable) -> Callable:
    return torch.compile(forward)


@contextlib.contextmanager
def compiled(transformer: torch.nn.Module, enabled: bool = True) -> Iterator[None]:
    """Run ``transformer`` compiled inside the block (nothing changes when ``enabled`` is false)."""
    if not enabled:
        yield
        return
    before = vars(transformer).get("forward")
    transformer.forward = _compiled(type(transformer).forward).__get__(transformer)
    try:
        yield
    finally:
        if before is None:
            del transformer.forward
        else:
            transformer.forward = before
