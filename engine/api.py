"""``calibstudio.apply_profile``: make an existing diffusers video pipeline sparse, and undo it."""

from __future__ import annotations

import os
from typing import Any

from calibstudio.engine.attention_hook import AttentionHook
from calibstudio.engine.models.wan import WanAdapter
from calibstudio.engine.profile import Profile, ProfileError


def apply_profile(pipe: Any, profile: Profile | str | os.PathLike[str], threshold: float = 0.999,
                  backend: str = "auto", dense_steps: int = 0) -> AttentionHook:
    """Route ``pipe``'s video self-attention through the profile's block-sparse masks at ``threshold``.

    Returns the installed hook: call ``.remove()`` (or use it as a context manager) to restore the
    pipeline exactly. The step a call belongs to is read from the pipeline's scheduler, so plain
    ``pipe(...)`` calls work unchanged; clips must have the size the profile was calibrated for.
    ``dense_steps``: the first denoising steps run dense (they decide the layout of the clip).
    """
    from diffusers import WanTransformer3DModel

    if not isinstance(getattr(pipe, "transformer", None), WanTransformer3DModel):
        raise ProfileError(f"apply_profile supports Wan pipelines (WanTransformer3DModel); got "
                           f"{type(getattr(pipe, 'transformer', pipe)).__name__}")
    if not isinstance(profile, Profile):
        profile = Profile.open(profile)
    adapter = WanAdapter()
    identity = adapter.identity(pipe)
    profile.check_compatible({k: identity[k] for k in ("class", "config_hash")}, profile.meta.grid)
    scheduler = pipe.scheduler
    hook = AttentionHook(adapter, pipe.transformer, mode="sparse", profile=profile, threshold=threshold,
                         step_source=lambda: scheduler.step_index or 0, backend=backend, dense_steps=dense_steps)
    hook.install()
    return hook
