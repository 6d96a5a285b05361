"""The caption grammar: paraphrases parse back, junk never crashes, held-out captions split off."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from calibstudio.engine.models.demo.captions import (
    ParsedCaption,
    all_captions,
    caption,
    caption_held_out,
    contrast_captions,
    example,
    parse_caption,
    reversed_caption,
    scene_from_caption,
    split_held_out,
)
from calibstudio.engine.models.demo.scenes import (
    BACKGROUNDS,
    MOTIONS,
    SHAPE_COLORS,
    SHAPES,
    Scene,
    compatible,
    make_scene,
    sample_scene,
)


def _attrs(x: Scene | ParsedCaption) -> tuple:
    return (x.color, x.shape, x.motion, x.background, x.target_color)


def _covering_scenes() -> list[Scene]:
    """Scenes that between them use every colour, shape, motion, background and target colour."""
    rng = np.random.default_rng(0)
    scenes = []
    for i, motion in enumerate(MOTIONS):
        for j, shape in enumerate(SHAPES):
            color = SHAPE_COLORS[(i + j) % len(SHAPE_COLORS)]
            bgs = [b for b in BACKGROUNDS if compatible(color, b)]
            scenes.append(make_scene(rng, color=color, shape=shape, background=bgs[(i * 3 + j) % len(bgs)],
                                     motion=motion))
    for color in SHAPE_COLORS:
        for bg in BACKGROUNDS:
            if compatible(color, bg):
                scenes.append(make_scene(rng, color=color, shape="star", background=bg, motion="recolor"))
    return scenes


def test_canonical_caption():
    scene = Scene("circle", "red", "blue", "left")
    assert caption(scene) == "a red circle moves left on a blue background"
    assert caption(Scene("star", "orange", "black", "recolor", target_color="white")) == (
        "an orange star changes colour to white on a black background"
    )


def test_a_caption_played_backwards():
    """What reverse guidance steers away from: the same scene with its motion run the other way."""
    assert reversed_caption("Against a green background, an orange rhombus rises") == (
        "an orange diamond moves down on a green background")
    assert reversed_caption("a white ball contracts over a gray background") == (
        "a white circle grows on a gray background")
    assert reversed_caption("a yellow ball changes color to red against a blue background") == (
        "a red circle changes colour to yellow on a blue background")
    for scene in _covering_scenes():  # every paraphrase of a one-way motion reverses; backwards twice is forwards
        if scene.motion.startswith("bounce"):
            assert reversed_caption(caption(scene)) is None
        else:
            assert reversed_caption(reversed_caption(caption(scene))) == caption(scene)
    for text in ("a red circle moves", "moves up", "", "a blue circle moves up on a blue background"):
        assert reversed_caption(text) is None  # no whole scene, or none that can be drawn


def test_what_a_motion_is_misread_as():
    """Reverse guidance's contrasts: backwards for every one-way motion, and there and back for a straight move."""
    assert contrast_captions("Against a green background, an orange rhombus rises") == (
        "an orange diamond moves down on a green background",
        "an orange diamond bounces up and down on a green background")
    assert contrast_captions("a white ball drifts left over a gray background") == (
        "a white circle moves right on a gray background",
        "a white circle bounces left and right on a gray background")
    assert contrast_captions("a white ball contracts over a gray background") == (
        "a white circle grows on a gray background",)
    for scene in _covering_scenes():
        assert contrast_captions(caption(scene))[:1] == tuple(filter(None, [reversed_caption(caption(scene))]))
    assert contrast_captions("a red circle moves up") == ()


def test_every_paraphrase_parses_back():
    scenes = _covering_scenes()
    assert {s.background for s in scenes} == set(BACKGROUNDS)
    assert {s.target_color for s in scenes} >= set(SHAPE_COLORS)
    count = 0
    for scene in scenes:
        texts = all_captions(scene)
        assert len(texts) >= 20
        for text in texts:
            assert _attrs(parse_caption(text)) == _attrs(scene), text
            count += 1
    assert count > 5000


def test_random_paraphrases_come_from_the_grammar():
    rng = np.random.default_rng(1)
    seen = set()
    for seed in range(200):
        scene = sample_scene(seed, "any")
        text = caption(scene, rng)
        assert text in all_captions(scene)
        assert parse_caption(text).complete
        seen.add(text.split()[0])
    assert len(seen) >= 3, "word order varies"


def test_unknown_words_and_junk_never_crash():
    assert _attrs(parse_caption("")) == (None,) * 5
    assert _attrs(parse_caption(None)) == (None,) * 5  # type: ignore[arg-type]
    assert _attrs(parse_caption(42)) == (None,) * 5  # type: ignore[arg-type]
    p = parse_caption("a gleaming red circle zooms left on a blue background in 4K, trending!!")
    assert (p.color, p.shape, p.motion, p.background) == ("red", "circle", "left", "blue")
    p = parse_caption("Grey ball bouncing sideways")
    assert (p.color, p.shape, p.motion, p.background) == ("gray", "circle", "bounce_lr", None)
    assert not p.complete
    p = parse_caption("a purple hexagon spins")
    assert (p.color, p.shape, p.motion) == ("purple", None, None)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_parse_never_raises(text):
    assert isinstance(parse_caption(text), ParsedCaption)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["a", "red", "blue", "circle", "box", "moves", "left", "up", "bounces", "turns",
                                 "to", "on", "background", "grows", "smaller", "zzz", "green", "colour", ","]),
                max_size=15))
def test_parse_never_raises_on_grammar_soup(words):
    p = parse_caption(" ".join(words))
    assert p.motion is None or p.motion in MOTIONS
    assert p.motion == "recolor" or p.target_color is None
    scene = scene_from_caption(" ".join(words), 0)  # whatever it says, it can be rendered
    assert compatible(scene.color, scene.background)


def test_split_held_out():
    train_texts = [caption(sample_scene(s, "train"), np.random.default_rng(s)) for s in range(100)]
    test_texts = [caption(sample_scene(s, "test"), np.random.default_rng(s)) for s in range(100)]
    train, test = split_held_out(train_texts + test_texts + ["nonsense"])
    assert train == train_texts + ["nonsense"] and test == test_texts
    assert not caption_held_out("nonsense")


def test_scene_from_caption_satisfies_the_caption():
    for seed in range(50):
        want = sample_scene(seed, "any")
        text = caption(want, np.random.default_rng(seed))
        got = scene_from_caption(text, seed)
        assert _attrs(got) == _attrs(want)
    got = scene_from_caption("a white box grows on a white background", 0)  # impossible background
    assert (got.color, got.shape, got.motion) == ("white", "square", "grow") and got.background != "white"
    got = scene_from_caption("a yellow star changes colour", np.random.default_rng(0))
    assert got.motion == "recolor" and got.target_color not in (None, "yellow")


def test_example_is_reproducible():
    clip, text, scene = example(11)
    clip2, text2, scene2 = example(scene.seed)
    assert text == text2 and scene == scene2 and np.array_equal(clip, clip2)
    assert _attrs(parse_caption(text)) == _attrs(scene)
    assert not example(np.random.default_rng(3), "train")[2].held_out


def test_motion_weights_draw_a_motion_more_often_and_keep_examples_reproducible():
    rng = np.random.default_rng(5)
    drawn = [example(rng, frames=2, motion_weights={"recolor": 4.0})[2] for _ in range(450)]
    share = sum(s.motion == "recolor" for s in drawn) / len(drawn)
    assert 0.25 < share < 0.45  # 4 / (4 + 8) = 1/3 of the clips; unweighted 1/9
    assert not any(s.held_out for s in drawn)
    _, text, scene = example(np.random.default_rng(6), frames=2, motion_weights={"up": 0.01})
    assert example(scene.seed, frames=2)[1:] == (text, scene)  # an accepted scene is its own seed's scene
