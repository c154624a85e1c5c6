"""The shapes world: deterministic scenes of coloured shapes and their captions.

Scene `i` of a dataset with seed `s` is drawn from `numpy.random.default_rng([s, i])`, so any slice of a dataset
can be regenerated on its own. The world is specified in `shared/design/shapes-world.md`; every constant below
comes from there.
"""

from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

CANVAS = 64
SUPERSAMPLE = 4

BACKGROUNDS = {
    "black": (0, 0, 0),
    "white": (255, 255, 255),
    "gray": (128, 128, 128),
    "navy": (20, 30, 90),
    "beige": (235, 220, 180),
}
COLORS = {
    "red": (220, 40, 40),
    "orange": (245, 140, 30),
    "yellow": (240, 220, 50),
    "green": (40, 170, 70),
    "blue": (40, 90, 230),
    "purple": (150, 60, 200),
    "white": (250, 250, 250),
    "black": (10, 10, 10),
}
SHAPES = ("circle", "square", "triangle", "cross")
SIZES = {"small": 14, "large": 26}
# name -> (column, row) in the 3 x 3 grid, and its caption phrase.
POSITIONS = {
    "top left": ((0, 0), "in the top left"),
    "top": ((1, 0), "at the top"),
    "top right": ((2, 0), "in the top right"),
    "left": ((0, 1), "on the left"),
    "center": ((1, 1), "in the center"),
    "right": ((2, 1), "on the right"),
    "bottom left": ((0, 2), "in the bottom left"),
    "bottom": ((1, 2), "at the bottom"),
    "bottom right": ((2, 2), "in the bottom right"),
}
POSITION_NAMES = tuple(POSITIONS)
CELL_CENTERS = (16, 32, 48)
JITTER = 3
RELATIONS = ("to the left of", "to the right of", "above", "below")
MIN_RELATION_GAP = 16

ONE_OBJECT_PROBABILITY = 0.6
DROP_ATTRIBUTE_PROBABILITY = 0.3
EMPTY_CAPTION_PROBABILITY = 0.1


@dataclass
class ShapeObject:
    color: str
    shape: str
    size: str
    position: str
    center: tuple  # (x, y) in 64-px canvas coordinates, after jitter


@dataclass
class Scene:
    background: str
    objects: list
    relation: str | None = None  # two-object scenes: how objects[0] stands to objects[1]
    stated: dict = field(default_factory=dict)  # which optional attributes the caption states
    caption: str = ""


def with_article(phrase):
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def draw_scene(scene):
    """Render a scene to a 64 x 64 RGB `PIL.Image` (drawn at 4x, downsampled with Lanczos)."""
    big = CANVAS * SUPERSAMPLE
    image = Image.new("RGB", (big, big), BACKGROUNDS[scene.background])
    draw = ImageDraw.Draw(image)
    for obj in scene.objects:
        extent = SIZES[obj.size] * SUPERSAMPLE
        cx, cy = obj.center[0] * SUPERSAMPLE, obj.center[1] * SUPERSAMPLE
        left, top = cx - extent / 2, cy - extent / 2
        right, bottom = left + extent, top + extent
        fill = COLORS[obj.color]
        if obj.shape == "circle":
            draw.ellipse([left, top, right, bottom], fill=fill)
        elif obj.shape == "square":
            draw.rectangle([left, top, right, bottom], fill=fill)
        elif obj.shape == "triangle":
            draw.polygon([(cx, top), (right, bottom), (left, bottom)], fill=fill)
        elif obj.shape == "cross":
            arm = extent / 3
            draw.rectangle([cx - arm / 2, top, cx + arm / 2, bottom], fill=fill)
            draw.rectangle([left, cy - arm / 2, right, cy + arm / 2], fill=fill)
        else:
            raise ValueError(f"`shape` must be one of {SHAPES}, got {obj.shape!r}.")
    return image.resize((CANVAS, CANVAS), Image.LANCZOS)


def _pick(rng, options):
    return options[int(rng.integers(len(options)))]


def _place(rng, position):
    (col, row), _ = POSITIONS[position]
    jitter = rng.uniform(-JITTER, JITTER, size=2)
    return (CELL_CENTERS[col] + float(jitter[0]), CELL_CENTERS[row] + float(jitter[1]))


def _random_object(rng, background, size, position):
    colors = [c for c in COLORS if c != background]
    return ShapeObject(_pick(rng, colors), _pick(rng, SHAPES), size, position, _place(rng, position))


def _satisfies(relation, first, second):
    dx = first[0] - second[0]
    dy = first[1] - second[1]
    if relation == "to the left of":
        return dx <= -MIN_RELATION_GAP
    if relation == "to the right of":
        return dx >= MIN_RELATION_GAP
    if relation == "above":
        return dy <= -MIN_RELATION_GAP
    return dy >= MIN_RELATION_GAP


def sample_scene(seed, index):
    """Scene `index` of the dataset with seed `seed`: objects, attributes and caption (no pixels)."""
    rng = np.random.default_rng([seed, index])
    background = _pick(rng, tuple(BACKGROUNDS))
    if rng.random() < ONE_OBJECT_PROBABILITY:
        obj = _random_object(rng, background, _pick(rng, tuple(SIZES)), _pick(rng, POSITION_NAMES))
        stated = {name: bool(rng.random() >= DROP_ATTRIBUTE_PROBABILITY) for name in ("size", "position", "background")}
        scene = Scene(background, [obj], stated=stated)
    else:
        relation = _pick(rng, RELATIONS)
        # Cell pairs whose centres (before jitter) are at least MIN_RELATION_GAP apart in the stated direction;
        # with the jitter of +-3 px, the 16 px gap between cell centres shrinks to no less than 10 px, so the
        # rule is checked on the jittered centres and the placement redrawn until it holds.
        while True:
            first_cell, second_cell = rng.choice(len(POSITION_NAMES), size=2, replace=False)
            first = _random_object(rng, background, "small", POSITION_NAMES[first_cell])
            second = _random_object(rng, background, "small", POSITION_NAMES[second_cell])
            if _satisfies(relation, first.center, second.center):
                break
        stated = {"background": bool(rng.random() >= DROP_ATTRIBUTE_PROBABILITY)}
        scene = Scene(background, [first, second], relation=relation, stated=stated)
    scene.caption = caption(scene)
    return scene


def caption(scene):
    """The caption of a scene, stating only what `scene.stated` allows."""
    if len(scene.objects) == 1:
        obj = scene.objects[0]
        words = ([obj.size] if scene.stated["size"] else []) + [obj.color, obj.shape]
        text = with_article(" ".join(words))
        if scene.stated["position"]:
            text += " " + POSITIONS[obj.position][1]
    else:
        first, second = scene.objects
        text = f"{with_article(first.color + ' ' + first.shape)} {scene.relation} "
        text += with_article(second.color + " " + second.shape)
    if scene.stated["background"]:
        text += f" on a {scene.background} background"
    return text
