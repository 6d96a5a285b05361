"""The caption grammar of the demo model: scenes to sentences with paraphrases, and back.

Training captions are drawn with paraphrase variety (synonyms, word order, participles) so the
model learns the attributes rather than one sentence shape; :func:`parse_caption` reads any of
them (and looser phrasings) back into attributes, which is how the adherence checker knows what a
prompt asked for and how a prompt becomes a ground-truth scene (:func:`scene_from_caption`).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from calibstudio.engine.models.demo.scenes import (
    BACKGROUNDS,
    DEFAULT_FRAMES,
    DEFAULT_HEIGHT,
    DEFAULT_WIDTH,
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
)

# --- Grammar ----------------------------------------------------------------------------------------

SHAPE_WORDS: dict[str, tuple[str, ...]] = {
    "circle": ("circle", "ball", "disc"),
    "square": ("square", "box"),
    "triangle": ("triangle",),
    "diamond": ("diamond", "rhombus"),
    "star": ("star",),
}

# (finite verb phrases, participle phrases); "{t}" is the target colour of a colour change.
MOTION_PHRASES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "left": (
        ("moves left", "moves to the left", "slides left", "goes left", "travels to the left"),
        ("moving left", "moving to the left", "sliding left", "drifting to the left"),
    ),
    "right": (
        ("moves right", "moves to the right", "slides right", "goes right", "travels to the right"),
        ("moving right", "moving to the right", "sliding right", "drifting to the right"),
    ),
    "up": (
        ("moves up", "moves upward", "rises", "goes up", "floats up"),
        ("moving up", "moving upward", "rising", "floating upward"),
    ),
    "down": (
        ("moves down", "moves downward", "falls", "goes down", "sinks"),
        ("moving down", "moving downward", "falling", "sinking"),
    ),
    "bounce_lr": (
        ("bounces left and right", "bounces from side to side", "bounces back and forth horizontally"),
        ("bouncing left and right", "bouncing from side to side", "bouncing horizontally"),
    ),
    "bounce_ud": (
        ("bounces up and down", "bounces vertically"),
        ("bouncing up and down", "bouncing vertically"),
    ),
    "grow": (
        ("grows", "grows bigger", "gets larger", "expands"),
        ("growing", "growing bigger", "getting larger", "expanding"),
    ),
    "shrink": (
        ("shrinks", "gets smaller", "contracts"),
        ("shrinking", "getting smaller", "contracting"),
    ),
    "recolor": (
        ("changes colour to {t}", "changes color to {t}", "turns {t}", "becomes {t}"),
        ("changing colour to {t}", "changing color to {t}", "turning {t}"),
    ),
}

BACKGROUND_PHRASES: tuple[str, ...] = (
    "on a {b} background",
    "over a {b} background",
    "against a {b} background",
    "in front of a {b} background",
)

# {s}: "red circle"; {v}: a finite verb phrase; {p}: a participle phrase; {bg}: a background phrase.
SENTENCES: tuple[str, ...] = ("a {s} {v} {bg}", "a {s} {p} {bg}", "{bg}, a {s} {v}")


def _fill(sentence: str, scene: Scene, shape_word: str, verb: str, part: str, bg_phrase: str) -> str:
    target = scene.target_color or ""
    text = sentence.format(
        s=f"{scene.color} {shape_word}",
        v=verb.format(t=target),
        p=part.format(t=target),
        bg=bg_phrase.format(b=scene.background),
    )
    text = re.sub(r"\b([Aa]) (?=[aeiou])", r"\1n ", text)  # "an orange star"
    return text[0].upper() + text[1:] if sentence.startswith("{bg}") else text


def caption(scene: Scene, rng: np.random.Generator | None = None) -> str:
    """The caption of a scene: canonical without ``rng``, a random paraphrase with one.

    Canonical: "a red circle moves left on a blue background".
    """
    verbs, parts = MOTION_PHRASES[scene.motion]
    if rng is None:
        return _fill(SENTENCES[0], scene, scene.shape, verbs[0], parts[0], BACKGROUND_PHRASES[0])

    def pick(options: tuple[str, ...]) -> str:
        return options[int(rng.integers(len(options)))]

    return _fill(
        pick(SENTENCES), scene, pick(SHAPE_WORDS[scene.shape]), pick(verbs), pick(parts), pick(BACKGROUND_PHRASES)
    )


def all_captions(scene: Scene) -> list[str]:
    """Every paraphrase the grammar can produce for a scene (for tests and for text-encoder checks)."""
    verbs, parts = MOTION_PHRASES[scene.motion]
    out: set[str] = set()
    for sentence, word, bg in itertools.product(SENTENCES, SHAPE_WORDS[scene.shape], BACKGROUND_PHRASES):
        if "{v}" in sentence:
            out.update(_fill(sentence, scene, word, v, parts[0], bg) for v in verbs)
        else:
            out.update(_fill(sentence, scene, word, verbs[0], p, bg) for p in parts)
    return sorted(out)


# --- Parsing ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ParsedCaption:
    """The attributes a caption asks for; None where the caption does not say (or says unclearly)."""

    color: str | None = None
    shape: str | None = None
    motion: str | None = None
    background: str | None = None
    target_color: str | None = None

    @property
    def complete(self) -> bool:
        """Whether colour, shape, motion and background are all known."""
        return None not in (self.color, self.shape, self.motion, self.background) and (
            self.motion != "recolor" or self.target_color is not None
        )


_COLOR_WORDS = {name: name for name in PALETTE} | {"grey": "gray", "violet": "purple", "aqua": "cyan"}
_SHAPE_LOOKUP = {w: s for s, words in SHAPE_WORDS.items() for w in words} | {
    "circles": "circle", "balls": "circle", "disk": "circle", "dot": "circle", "squares": "square",
    "boxes": "square", "triangles": "triangle", "diamonds": "diamond", "stars": "star",
}
_BACKGROUND_NOUNS = {"background", "backdrop", "backround", "bg"}
_CHANGE_WORDS = {"change", "changes", "changing", "changed", "turn", "turns", "turning", "become", "becomes",
                 "becoming", "fade", "fades", "fading", "into", "to"}
_BOUNCE = {"bounce", "bounces", "bouncing", "bouncy", "oscillates", "oscillating"}
_HORIZONTAL = {"left", "right", "side", "sideways", "horizontally", "horizontal"}
_VERTICAL = {"up", "down", "vertically", "vertical"}
_GROW = {"grow", "grows", "growing", "expand", "expands", "expanding", "larger", "bigger", "enlarges", "swells"}
_SHRINK = {"shrink", "shrinks", "shrinking", "smaller", "contract", "contracts", "contracting"}
_DIRECTIONS = {
    "left": "left", "leftward": "left", "leftwards": "left", "westward": "left",
    "right": "right", "rightward": "right", "rightwards": "right", "eastward": "right",
    "up": "up", "upward": "up", "upwards": "up", "rise": "up", "rises": "up", "rising": "up",
    "float": "up", "floats": "up", "floating": "up", "ascends": "up", "ascending": "up",
    "down": "down", "downward": "down", "downwards": "down", "fall": "down", "falls": "down",
    "falling": "down", "sink": "down", "sinks": "down", "sinking": "down", "drops": "down",
    "dropping": "down", "descends": "down", "descending": "down",
}
_SKIPPABLE = {"a", "an", "the", "one", "small", "big", "large", "little", "tiny", "bright", "dark", "light",
              "solid", "plain", "single", "colour", "color", "coloured", "colored"}


def _next_content(tokens: list[str], i: int) -> str | None:
    for tok in tokens[i + 1 :]:
        if tok not in _SKIPPABLE:
            return tok
    return None


def _parse(text: str) -> ParsedCaption:
    tokens = re.findall(r"[a-z]+", text.lower())
    shape_idx = next((i for i, t in enumerate(tokens) if t in _SHAPE_LOOKUP), None)
    shape = _SHAPE_LOOKUP[tokens[shape_idx]] if shape_idx is not None else None

    color = background = target = None
    loose: list[str] = []
    for i, tok in enumerate(tokens):
        name = _COLOR_WORDS.get(tok)
        if name is None:
            continue
        following = _next_content(tokens, i)
        prev = tokens[i - 1] if i > 0 else ""
        if following in _BACKGROUND_NOUNS:
            background = background or name
        elif following in _SHAPE_LOOKUP and color is None:
            color = name
        elif prev in _CHANGE_WORDS or prev in {"colour", "color"} and i > 1 and tokens[i - 2] in _CHANGE_WORDS:
            target = target or name
        elif prev in {"on", "over", "against"} and background is None:
            background = name
        else:
            loose.append(name)
    for name in loose:  # colours whose role the word order did not give: shape colour first
        if color is None:
            color = name
        elif background is None and name != color:
            background = name

    words = set(tokens)
    motion: str | None = None
    if words & _BOUNCE:
        horizontal, vertical = bool(words & _HORIZONTAL), bool(words & _VERTICAL)
        motion = "bounce_lr" if horizontal and not vertical else "bounce_ud" if vertical and not horizontal else None
    elif target is not None or words & {"change", "changes", "changing"} and words & {"colour", "color"}:
        motion = "recolor"
    elif words & _GROW and not words & _SHRINK:
        motion = "grow"
    elif words & _SHRINK and not words & _GROW:
        motion = "shrink"
    else:
        found = [_DIRECTIONS[t] for t in tokens if t in _DIRECTIONS]
        motion = found[0] if found else None
    if motion != "recolor":
        target = None
    return ParsedCaption(color=color, shape=shape, motion=motion, background=background, target_color=target)


def parse_caption(text: object) -> ParsedCaption:
    """Read the attributes a caption asks for. Unknown words are ignored; never raises.

    Anything that is not a string, or says nothing we know, gives an all-None result.
    """
    if not isinstance(text, str):
        return ParsedCaption()
    try:
        return _parse(text)
    except Exception:  # a parser for user prompts must not take the caller down
        return ParsedCaption()


_REVERSED_MOTION = {"left": "right", "right": "left", "up": "down", "down": "up", "grow": "shrink", "shrink": "grow"}
_BOUNCE_ON_AXIS = {"left": "bounce_lr", "right": "bounce_lr", "up": "bounce_ud", "down": "bounce_ud"}


def reversed_caption(text: str) -> str | None:
    """The canonical caption of ``text``'s scene played backwards: "a red circle rises ..." -> "a red circle
    moves down ...", a colour change with its two colours swapped. None where the clip reads the same
    backwards (bounces) or the caption does not name a whole, drawable scene.

    The demo model's sampler guides away from it (:func:`contrast_captions`): Wan's RoPE tells the model how far
    apart two frames are but not which end of the clip it is at, and its misses run the motion backwards or
    there and back (docs/demo-model/motion-experiment.json).
    """
    p = parse_caption(text)
    if not p.complete or p.motion not in (*_REVERSED_MOTION, "recolor"):
        return None
    try:
        if p.motion == "recolor":
            scene = Scene(shape=p.shape, color=p.target_color, background=p.background, motion="recolor",
                          target_color=p.color)
        else:
            scene = Scene(shape=p.shape, color=p.color, background=p.background, motion=_REVERSED_MOTION[p.motion])
    except ValueError:  # e.g. the shape in the background's colour: no such scene to steer away from
        return None
    return caption(scene)


def contrast_captions(text: str) -> tuple[str, ...]:
    """What the demo model's motion misses look like for ``text``, for its sampler to steer away from: the
    scene played backwards (:func:`reversed_caption`) and, for a straight move, there and back (the bounce on
    its axis: "rises" -> "bounces up and down"). Empty where the clip reads the same backwards (bounces) or the
    caption does not name a whole, drawable scene.
    """
    backwards = reversed_caption(text)
    if backwards is None:
        return ()
    p = parse_caption(text)
    if p.motion not in _BOUNCE_ON_AXIS:
        return (backwards,)
    there_and_back = Scene(shape=p.shape, color=p.color, background=p.background, motion=_BOUNCE_ON_AXIS[p.motion])
    return (backwards, caption(there_and_back))


# --- Splits and ground truth ------------------------------------------------------------------------


def caption_held_out(text: str) -> bool:
    """Whether a caption asks for a held-out (colour, shape, motion) triple; False if unparsable."""
    p = parse_caption(text)
    if p.color is None or p.shape is None or p.motion is None:
        return False
    return is_held_out(p.color, p.shape, p.motion)


def split_held_out(captions: Iterable[str]) -> tuple[list[str], list[str]]:
    """Split captions into (trainable, held out) by the fixed held-out rule of ``scenes.is_held_out``."""
    train: list[str] = []
    test: list[str] = []
    for text in captions:
        (test if caption_held_out(text) else train).append(text)
    return train, test


def scene_from_caption(text: str, rng: np.random.Generator | int) -> Scene:
    """A scene that satisfies a caption, so any prompt can be rendered as ground truth.

    Attributes the caption leaves open (or makes impossible, such as a shape on a background of its
    own colour) are drawn from ``rng``; the numeric parameters always are.
    """
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(int(rng))
    p = parse_caption(text)

    def pick(options: list[str] | tuple[str, ...]) -> str:
        return options[int(rng.integers(len(options)))]

    color = p.color or pick(SHAPE_COLORS)
    shape = p.shape or pick(SHAPES)
    motion = p.motion or pick(MOTIONS)
    background = p.background
    if background is None or not compatible(color, background):
        background = pick([b for b in BACKGROUNDS if compatible(color, b)])
    target = p.target_color
    if motion == "recolor" and (target is None or target in (color, background) or target not in SHAPE_COLORS):
        target = None  # make_scene draws one
    return make_scene(rng, color=color, shape=shape, background=background, motion=motion, target_color=target)


def example(
    rng: np.random.Generator | int,
    split: str = "train",
    frames: int = DEFAULT_FRAMES,
    height: int = DEFAULT_HEIGHT,
    width: int = DEFAULT_WIDTH,
    paraphrase: bool = True,
    texture: float = 0.0,
    motion_weights: Mapping[str, float] | None = None,
) -> tuple[np.ndarray, str, Scene]:
    """One (clip uint8 [F, H, W, 3], caption, scene) triple: what the training loop and eval consume.

    The scene, and so the clip, comes from ``sample_scene(rng, split, texture)``; the paraphrase from
    the scene's own seed, so an example is reproducible from ``scene.seed`` alone. ``motion_weights``
    (motion -> relative frequency, 1 where not named) draws some motions more often than others, by
    rejection, so every accepted scene is still ``sample_scene(scene.seed, ...)``; it needs a Generator.
    """
    scene = sample_scene(rng, split, texture)
    if motion_weights:
        top = max(1.0, *motion_weights.values())
        while rng.random() * top >= motion_weights.get(scene.motion, 1.0):
            scene = sample_scene(rng, split, texture)
    text = caption(scene, np.random.default_rng([scene.seed, 1]) if paraphrase else None)
    return render(scene, frames, height, width), text, scene
