"""The procedural clip generator: deterministic, every attribute renders, shapes stay in frame."""

import itertools
from dataclasses import replace

import numpy as np
import pytest

from calibstudio.engine.models.demo import scenes
from calibstudio.engine.models.demo.scenes import (
    BACKGROUNDS,
    DEFAULT_FRAMES,
    DEFAULT_HEIGHT,
    DEFAULT_TOKENS,
    DEFAULT_WIDTH,
    HELD_OUT,
    MOTIONS,
    PALETTE,
    SHAPE_COLORS,
    SHAPES,
    Scene,
    compatible,
    is_held_out,
    make_scene,
    render,
    sample_scene,
    trajectory,
)


def test_default_clip_gives_at_least_2k_tokens():
    assert DEFAULT_TOKENS >= 2048
    clip = render(sample_scene(0))
    assert clip.shape == (DEFAULT_FRAMES, DEFAULT_HEIGHT, DEFAULT_WIDTH, 3) and clip.dtype == np.uint8


def test_deterministic_from_a_seed():
    a, b = sample_scene(1234), sample_scene(1234)
    assert a == b and a.seed == 1234
    assert np.array_equal(render(a), render(b))
    drawn = sample_scene(np.random.default_rng(7))
    assert sample_scene(drawn.seed) == drawn
    assert sample_scene(np.random.default_rng(7)) == drawn
    assert sample_scene(1) != sample_scene(2)


def test_palette_far_apart_and_shape_never_on_its_own_colour():
    for a, b in itertools.combinations(SHAPE_COLORS, 2):
        assert np.linalg.norm(np.subtract(PALETTE[a], PALETTE[b])) >= 80, (a, b)
    for color in SHAPE_COLORS:
        assert any(compatible(color, bg) for bg in BACKGROUNDS)
        assert not compatible(color, color)
    for seed in range(300):
        s = sample_scene(seed, "any")
        assert compatible(s.color, s.background)
        assert s.target_color is None or compatible(s.target_color, s.background)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("motion", MOTIONS)
def test_every_shape_and_motion_renders_inside_the_frame(shape, motion):
    rng = np.random.default_rng(hash((shape, motion)) % 2**32)
    for color, background in [("red", "black"), ("cyan", "white"), ("purple", "gray")]:
        scene = make_scene(rng, color=color, shape=shape, background=background, motion=motion)
        clip = render(scene)
        bg = np.array(PALETTE[background])
        border = np.concatenate([clip[:, 0], clip[:, -1], clip[:, :, 0], clip[:, :, -1]]).reshape(-1, 3)
        assert (border == bg).all(), "the shape must stay inside the frame"
        first = clip[0].reshape(-1, 3)
        assert (first == np.array(PALETTE[color])).all(axis=1).sum() >= 20, "the shape shows in its colour"
        if motion == "recolor":
            last = clip[-1].reshape(-1, 3)
            assert (last == np.array(PALETTE[scene.target_color])).all(axis=1).sum() >= 20


def test_every_colour_renders():
    rng = np.random.default_rng(0)
    for color in SHAPE_COLORS:
        bg = next(b for b in BACKGROUNDS if compatible(color, b))
        clip = render(make_scene(rng, color=color, shape="square", background=bg, motion="left"))
        assert (clip[0].reshape(-1, 3) == np.array(PALETTE[color])).all(axis=1).any()


def test_trajectories_follow_the_motion():
    rng = np.random.default_rng(3)
    for motion in MOTIONS:
        scene = make_scene(rng, color="red", shape="circle", background="black", motion=motion)
        cx, cy, radius, _ = trajectory(scene)
        dx, dy = np.diff(cx), np.diff(cy)
        if motion in ("left", "right", "up", "down"):
            moving, still = (dx, dy) if motion in ("left", "right") else (dy, dx)
            sign = -1 if motion in ("left", "up") else 1
            assert (sign * moving > 0).all() and np.allclose(still, 0)
            assert abs(moving.sum()) >= 0.3 * DEFAULT_WIDTH - 1e-6
        elif motion.startswith("bounce"):
            moving, still = (dx, dy) if motion == "bounce_lr" else (dy, dx)
            assert (moving > 0).any() and (moving < 0).any() and np.allclose(still, 0)
        else:
            assert np.allclose(dx, 0) and np.allclose(dy, 0)
        if motion == "grow":
            assert radius[-1] >= 1.7 * radius[0] - 1e-9
        elif motion == "shrink":
            assert radius[-1] <= 0.55 * radius[0] + 1e-9
        else:
            assert np.allclose(radius, radius[0])


def test_render_at_other_sizes():
    clip = render(sample_scene(5), frames=9, height=48, width=80)
    assert clip.shape == (9, 48, 80, 3)


def test_scene_validation():
    with pytest.raises(ValueError):
        Scene("hexagon", "red", "black", "left")
    with pytest.raises(ValueError):
        Scene("circle", "red", "red", "left")
    with pytest.raises(ValueError):
        Scene("circle", "red", "black", "recolor")  # no target
    with pytest.raises(ValueError):
        Scene("circle", "red", "black", "left", target_color="blue")
    with pytest.raises(ValueError):
        sample_scene(0, "validation")


def test_held_out_triples_never_sampled_for_training():
    assert 0.05 * 360 <= len(HELD_OUT) <= 0.15 * 360
    for seed in range(3000):
        s = sample_scene(seed, "train")
        assert (s.color, s.shape, s.motion) not in HELD_OUT and not s.held_out
    for seed in range(200):
        assert sample_scene(seed, "test").held_out
    # every single attribute and every pair of attributes is still trained on
    trained = [(c, s, m) for c in SHAPE_COLORS for s in SHAPES for m in MOTIONS if not is_held_out(c, s, m)]
    assert {(c, s) for c, s, _ in trained} == set(itertools.product(SHAPE_COLORS, SHAPES))
    assert {(c, m) for c, _, m in trained} == set(itertools.product(SHAPE_COLORS, MOTIONS))
    assert {(s, m) for _, s, m in trained} == set(itertools.product(SHAPES, MOTIONS))


def test_textured_backgrounds_pan_and_leave_the_scene_alone():
    plain, textured = sample_scene(77), sample_scene(77, texture=20.0)
    assert plain.texture == 0 and 10.0 <= textured.texture <= 20.0
    assert replace(textured, texture=0.0, texture_seed=0, pan_x=0.0, pan_y=0.0) == plain  # same shape, motion
    assert sample_scene(77, texture=20.0) == textured  # reproducible from the seed
    bg = scenes.background(textured)
    flat = np.asarray(PALETTE[textured.background], dtype=np.float64)
    deviation = np.abs(bg - flat).max(axis=-1)
    assert deviation.max() <= textured.texture + 1e-9 and deviation.mean() > 0.2 * textured.texture
    assert not np.allclose(bg[0], bg[-1]), "the pattern pans over the clip"
    clip = render(textured)
    assert np.array_equal(clip, render(textured)) and (render(plain) != clip).any()
    with pytest.raises(ValueError, match="texture"):
        replace(plain, texture=100.0)
