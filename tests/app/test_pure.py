"""The torch-free, Qt-free helpers: cost model, token grid, mask outline."""

from __future__ import annotations

import numpy as np
import pytest

from calibstudio.app.cost_model import ANCHORS, attention_share, estimate, predicted_speedup
from calibstudio.app.mask_graphics import mask_outline
from calibstudio.app.token_grid import block_span


def test_attention_share_reproduces_the_wan_anchors():
    for tokens, share, _ in ANCHORS:
        assert attention_share(tokens) == pytest.approx(share, abs=0.01)


def test_speedup_formula():
    assert predicted_speedup(1.0, 0.65) == pytest.approx(1.0)
    assert predicted_speedup(0.125, 0.65) == pytest.approx(1 / (0.35 + 0.65 * 0.125))
    text = estimate(32_760, 0.25).explain()
    assert "45" in text and "density" in text and "Wan-14B's 5120 assumed" in text
    # a narrow model spends more of its step in attention at the same length
    small = estimate(4096, 0.25, {"name": "demo", "config": {"num_attention_heads": 4, "attention_head_dim": 64}})
    assert small.width == 256 and small.share == pytest.approx(4096 / (4096 + 2000))
    assert "width 256 from the profile" in small.explain()


def test_block_span_in_frame_major_order():
    # 4 frames of 16 x 16 tokens, blocks of 32: block 9 = tokens 288..319 = frame 1, rows 2-3
    span = block_span((4, 16, 16), 32, 9)
    assert (span.first_token, span.last_token) == (288, 319)
    assert span.first == (1, 2, 0) and span.last == (1, 3, 15)
    assert span.describe() == "f1 r2 c0 – r3 c15"
    # a block that wraps onto the next frame, and a short last block
    assert block_span((2, 3, 5), 8, 1).describe() == "f0 r1 c3 – f1 r0 c0"
    assert block_span((2, 3, 5), 8, 3).last_token == 29
    with pytest.raises(ValueError, match="outside"):
        block_span((2, 3, 5), 8, 4)


def test_mask_outline_traces_the_boundary():
    mask = np.zeros((4, 5), dtype=bool)
    mask[1:3, 1:4] = True
    x, y = mask_outline(mask)
    segments = {tuple(map(tuple, s)) for s in np.stack([x, y], axis=1).reshape(-1, 2, 2).tolist()}
    assert segments == {((1, 1), (4, 1)), ((1, 3), (4, 3)), ((1, 1), (1, 3)), ((4, 1), (4, 3))}
    assert mask_outline(np.zeros((3, 3), dtype=bool))[0].size == 0
