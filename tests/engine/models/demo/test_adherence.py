"""The prompt-adherence checker reads the generator's own clips back, and rejects wrong or empty clips."""

import numpy as np
import pytest

from calibstudio.engine.models.demo.adherence import (
    check_clip,
    direction_by_motion,
    read_clip,
    score_clips,
    teleport_count,
)
from calibstudio.engine.models.demo.captions import caption
from calibstudio.engine.models.demo.scenes import SHAPES, Scene, make_scene, render, sample_scene

N_SCENES = 200


@pytest.fixture(scope="module")
def rendered():
    """Random scenes (train and held-out alike) with paraphrased captions and clean renders."""
    rng = np.random.default_rng(2024)
    scenes = [sample_scene(rng, "any") for _ in range(N_SCENES)]
    texts = [caption(s, rng) for s in scenes]
    return scenes, texts, [render(s) for s in scenes]


def test_recovers_clean_renders(rendered):
    scenes, texts, clips = rendered
    assert {s.shape for s in scenes} == set(SHAPES)
    scores = score_clips(clips, texts)
    assert set(scores) == {"color", "shape", "direction"}
    assert min(scores.values()) >= 0.98, scores


def test_recovers_renders_with_textured_panning_backgrounds():
    rng = np.random.default_rng(99)
    scenes = [sample_scene(rng, "any", texture=24.0) for _ in range(N_SCENES // 2)]
    scores = score_clips([render(s) for s in scenes], [caption(s, rng) for s in scenes])
    assert min(scores.values()) >= 0.98, scores


def test_recovers_noisy_float_renders(rendered):
    _, texts, clips = rendered
    rng = np.random.default_rng(5)
    sigma = np.float32(10 / 255)
    noisy = [np.clip(c / np.float32(255) + sigma * rng.standard_normal(c.shape, np.float32), 0, 1) for c in clips]
    scores = score_clips(noisy, texts)
    assert min(scores.values()) >= 0.90, scores


def test_values_in_minus_one_to_one():
    scene = sample_scene(8)
    clip = render(scene).astype(np.float32) / 127.5 - 1.0
    a = check_clip(clip, caption(scene), value_range=(-1.0, 1.0))
    assert a.color_ok and a.shape_ok and a.direction_ok and a.background_ok


def test_pure_noise_and_blank_clips_fail():
    rng = np.random.default_rng(0)
    text = "a red circle moves left on a black background"
    for clip in (
        rng.integers(0, 256, (16, 64, 64, 3), dtype=np.uint8),
        rng.random((16, 64, 64, 3)),
        np.full((16, 64, 64, 3), 12, dtype=np.uint8),
    ):
        a = check_clip(clip, text)
        assert not (a.color_ok or a.shape_ok or a.direction_ok) and not a.reading.detected
    assert score_clips([rng.random((16, 64, 64, 3))], [text]) == {"color": 0.0, "shape": 0.0, "direction": 0.0}


def test_wrong_attributes_are_caught():
    rng = np.random.default_rng(1)
    clip = render(make_scene(rng, color="red", shape="triangle", background="black", motion="left"))
    a = check_clip(clip, "a red triangle moves left on a black background")
    assert (a.color_ok, a.shape_ok, a.direction_ok, a.background_ok) == (True, True, True, True)
    a = check_clip(clip, "a blue triangle moves left on a black background")
    assert (a.color_ok, a.shape_ok, a.direction_ok) == (False, True, True)
    a = check_clip(clip, "a red diamond moves left on a black background")
    assert (a.color_ok, a.shape_ok, a.direction_ok) == (True, False, True)
    a = check_clip(clip, "a red triangle moves right on a black background")
    assert (a.color_ok, a.shape_ok, a.direction_ok) == (True, True, False)
    a = check_clip(clip, "a red triangle bounces left and right on a gray background")
    assert (a.direction_ok, a.background_ok) == (False, False)
    a = check_clip(clip, "something red")  # what the caption does not say cannot be verified
    assert (a.color_ok, a.shape_ok, a.direction_ok) == (True, False, False)


def test_colour_change_needs_the_right_target():
    clip = render(Scene("square", "yellow", "blue", "recolor", target_color="red"))
    assert check_clip(clip, "a yellow box turns red on a blue background").direction_ok
    assert not check_clip(clip, "a yellow box turns white on a blue background").direction_ok
    assert not check_clip(clip, "a red box turns yellow on a blue background").color_ok
    still = render(Scene("square", "yellow", "blue", "grow", size=0.1, growth=2.0))
    assert read_clip(still).motion == "grow"


def test_centroid_jitter_does_not_make_a_straight_move_a_bounce():
    # A small triangle's centroid row flickers by a pixel from frame to frame; summed over 32 frames
    # that read as an up-and-down bounce once. The scene is the one held-out caption it happened to.
    scene = Scene("triangle", "yellow", "black", "left", x=0.792, y=0.773, vx=-0.377, size=0.143)
    assert read_clip(render(scene, frames=32)).motion == "left"


def test_a_move_that_wraps_round_is_not_a_move():
    up = render(make_scene(np.random.default_rng(4), color="red", shape="square", background="black", motion="up"))
    cut = 3 * len(up) // 4
    assert read_clip(up).motion == "up"
    wrapped = np.concatenate([up[:cut], up[: len(up) - cut]])  # climbs, drops back, climbs a little again
    assert read_clip(wrapped).motion == "bounce_ud"
    assert read_clip(up[::-1]).motion == "down"
    assert read_clip(wrapped).teleports and not read_clip(up).teleports
    assert read_clip(wrapped).describe().endswith("(the shape jumps between frames)")
    results = [check_clip(clip, "a red square moves up on a black background") for clip in (up, wrapped, up)]
    assert teleport_count(results) == "1/3"


def test_no_generated_scene_jumps(rendered):
    _, _, clips = rendered
    rng = np.random.default_rng(3)
    fast = [render(sample_scene(rng, "any"), frames=8) for _ in range(40)]  # the fewest frames: the longest steps
    assert not any(read_clip(clip).teleports for clip in [*clips, *fast])


def test_a_bounce_that_turns_several_times_is_a_bounce():
    scene = make_scene(np.random.default_rng(6), color="white", shape="square", background="black", motion="right")
    right = render(scene, frames=32)
    order = np.r_[8:16, 16:0:-1, 0:6]  # right, then left past the start, then right again, ending near the start
    assert read_clip(right[order]).motion == "bounce_lr"


def test_a_still_shape_stays():
    clip = np.repeat(render(sample_scene(3))[:1], 16, axis=0)
    assert read_clip(clip).motion == "stay"


def test_score_clips_checks_its_inputs():
    with pytest.raises(ValueError):
        score_clips([np.zeros((16, 64, 64, 3), np.uint8)], [])
    with pytest.raises(ValueError):
        check_clip(np.zeros((64, 64, 3), np.uint8), "a red circle")
    assert score_clips([], []) == {"color": 0.0, "shape": 0.0, "direction": 0.0}


def test_direction_is_tallied_per_asked_for_motion(rendered):
    scenes, texts, clips = rendered
    results = [check_clip(c, t) for c, t in zip(clips[:20], texts[:20], strict=True)]
    wrong = check_clip(clips[0], "a red circle changes colour to blue on a gray background")  # asks recolor
    tally = direction_by_motion([*results, wrong])
    assert sum(int(v.split("/")[1]) for v in tally.values()) == 21
    assert set(tally) == {s.motion for s in scenes[:20]} | {"recolor"}
    hits, asked = map(int, tally["recolor"].split("/"))
    assert asked == 1 + sum(s.motion == "recolor" for s in scenes[:20]) and hits == asked - 1
