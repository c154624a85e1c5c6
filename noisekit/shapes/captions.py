"""Read a shapes-world caption back into the attributes it states (the inverse of `scenes.caption`)."""

import re

from .scenes import BACKGROUNDS, COLORS, POSITIONS, RELATIONS, SHAPES, SIZES

_PHRASE_TO_POSITION = {phrase: name for name, (_, phrase) in POSITIONS.items()}
_OBJECT = rf"an? (?:(?P<size{{i}}>{'|'.join(SIZES)}) )?(?P<color{{i}}>{'|'.join(COLORS)}) (?P<shape{{i}}>{'|'.join(SHAPES)})"
_BACKGROUND = rf"(?: on a (?P<background>{'|'.join(BACKGROUNDS)}) background)?"
_ONE = re.compile(
    "^" + _OBJECT.format(i=0) + rf"(?: (?P<position>{'|'.join(map(re.escape, _PHRASE_TO_POSITION))}))?" + _BACKGROUND + "$"
)
_TWO = re.compile(
    "^" + _OBJECT.format(i=0) + rf" (?P<relation>{'|'.join(RELATIONS)}) " + _OBJECT.format(i=1) + _BACKGROUND + "$"
)


def parse_caption(text):
    """`{"objects": [{"color", "shape", "size"?}], "position"?, "relation"?, "background"?}` for a caption of
    the world's grammar, or `None` for any other text (including the empty prompt)."""
    text = text.strip().lower()
    match = _ONE.match(text)
    if match:
        obj = {"color": match["color0"], "shape": match["shape0"]}
        if match["size0"]:
            obj["size"] = match["size0"]
        parsed = {"objects": [obj]}
        if match["position"]:
            parsed["position"] = _PHRASE_TO_POSITION[match["position"]]
    else:
        match = _TWO.match(text)
        if not match or match["size0"] or match["size1"]:
            return None
        parsed = {"objects": [{"color": match["color0"], "shape": match["shape0"]},
                              {"color": match["color1"], "shape": match["shape1"]}],
                  "relation": match["relation"]}
    if match["background"]:
        parsed["background"] = match["background"]
    return parsed
