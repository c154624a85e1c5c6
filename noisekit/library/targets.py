"""Attribute targets: what `NAME=VALUE` means, and how a library entry scores against it.

NAME is an attribute column (`brightness`, `lab_a`, `hfe`, `glcm_contrast`, `hu_1`, ...) or an extractor's name
(`color`, `sharpness`, `texture`, `shape`, `clip`), which stands for all its columns (`color` for L*a*b*).
VALUE is one of:

- a number (`0.7`) or a library percentile (`p90`): closest first;
- a range `LO..HI` of numbers or percentiles (`0.2..0.5`, `p80..`, `..p10`): inside scores 0, outside by its
  distance; `high` is `p90..` and `low` is `..p10`;
- for `color`: a colour name (`red`, `navy`, ... see `COLOR_NAMES`) or `#rrggbb`: closest mean L*a*b* (Delta E 1976);
- an image (a file path, a PIL image or a `(3, H, W)` tensor in [0, 1]): closest features of the same extractor
  (for `clip`: highest cosine of the CLIP image embeddings).

Scores are higher-is-better and in units of the library's spread (standard deviations; for a colour, Delta E over
the RMS L*a*b* spread), so terms of different attributes add up.
"""

import math
import os
import re
from dataclasses import dataclass

import torch

from .attributes import srgb_to_lab

COLOR_NAMES = {  # the shapes world's colours and backgrounds, then CSS basics
    "red": (220, 40, 40), "orange": (245, 140, 30), "yellow": (240, 220, 50), "green": (40, 170, 70),
    "blue": (40, 90, 230), "purple": (150, 60, 200), "black": (0, 0, 0), "white": (255, 255, 255),
    "gray": (128, 128, 128), "grey": (128, 128, 128), "navy": (20, 30, 90), "beige": (235, 220, 180),
    "pink": (255, 192, 203), "brown": (139, 69, 19), "cyan": (0, 255, 255), "magenta": (255, 0, 255),
}
GROUP_COLUMNS = {"color": ("lab_l", "lab_a", "lab_b")}
PERCENTILE = re.compile(r"^p(\d+(\.\d+)?)$")
HIGH, LOW = "p90..", "..p10"


@dataclass
class Target:
    """One parsed attribute target.

    Attributes:
        name (`str`): the NAME as given.
        extractor (`str`): the feature table it reads.
        columns (`tuple[int]`): column indices in that table (empty for an embedding).
        kind (`str`): `"value"`, `"range"`, `"color"`, `"exemplar"` or `"embedding"`.
        value: a float, `(low, high)` bounds (None = open), Lab `(3,)`, or an exemplar feature tensor.
        spec (`str`): the VALUE as written, for reports.
    """

    name: str
    extractor: str
    columns: tuple
    kind: str
    value: object
    spec: str


def parse_attribute(text):
    """`"NAME=VALUE"` -> `(NAME, VALUE)`."""
    if not isinstance(text, str) or "=" not in text:
        raise ValueError(f"an attribute must be written NAME=VALUE (e.g. brightness=high), got {text!r}.")
    name, value = text.split("=", 1)
    return name.strip(), value.strip()


def attribute_names(manifest):
    """Every NAME a library accepts: its extractors and their columns."""
    names = list(manifest["extractors"])
    for description in manifest["extractors"].values():
        names += description["columns"]
    return names


def _locate(name, manifest):
    """`(extractor, column names)` of NAME."""
    extractors = manifest["extractors"]
    if name in extractors:
        return name, tuple(GROUP_COLUMNS.get(name, extractors[name]["columns"]))
    for key, description in extractors.items():
        if name in description["columns"]:
            return key, (name,)
    raise ValueError(f"attribute NAME must be one of {attribute_names(manifest)} for this library, got {name!r}.")


def hex_or_name_to_lab(value):
    """`#rrggbb` or a `COLOR_NAMES` name -> L*a*b* `(3,)`, or `None` if `value` is neither."""
    lowered = value.lower()
    if re.fullmatch(r"#[0-9a-f]{6}", lowered):
        rgb = tuple(int(lowered[i:i + 2], 16) for i in (1, 3, 5))
    elif lowered in COLOR_NAMES:
        rgb = COLOR_NAMES[lowered]
    else:
        return None
    return srgb_to_lab(torch.tensor(rgb, dtype=torch.float32).view(1, 3, 1, 1) / 255).flatten()


def load_image(value):
    """A path, PIL image or `(3, H, W)` / `(1, 3, H, W)` tensor in [0, 1] -> `(1, 3, H, W)` float32."""
    import numpy as np
    from PIL import Image

    if isinstance(value, str):
        value = Image.open(value)
    if isinstance(value, Image.Image):
        array = np.asarray(value.convert("RGB"), dtype=np.float32) / 255
        return torch.from_numpy(array).permute(2, 0, 1)[None]
    if torch.is_tensor(value) and value.ndim in (3, 4) and value.shape[-3] == 3:
        return value.float().reshape(1, *value.shape[-3:])
    raise ValueError(f"an exemplar must be an image file, a PIL image or a (3, H, W) tensor, got "
                     f"{type(value).__name__}.")


def _number(token, name):
    if token == "":
        return None
    match = PERCENTILE.match(token)
    if match:
        percent = float(match.group(1))
        if percent > 100:
            raise ValueError(f"attribute {name!r}: a percentile must be p0..p100, got {token!r}.")
        return ("percentile", percent)
    try:
        number = float(token)
    except ValueError:
        return "bad"
    if not math.isfinite(number):
        raise ValueError(f"attribute {name!r}: a value must be a finite number, got {token!r}.")
    return number


def check_range(name, low, high, spec):
    """Refuse a range whose low end is above its high end (`0.8..0.2`, `p90..p10`)."""
    if low is None or high is None or isinstance(low, tuple) != isinstance(high, tuple):
        return  # a number against a percentile is checked once the percentile is read (`resolve_range`)
    if (low[1] if isinstance(low, tuple) else low) > (high[1] if isinstance(high, tuple) else high):
        raise ValueError(f"attribute {name!r}: a range LO..HI needs LO <= HI, got {spec!r}.")


def check_distinct(items):
    """Refuse an attribute NAME given twice (`brightness=high` with `brightness=low` asks for nothing)."""
    seen = {}
    for name, value in items:
        if name in seen:
            raise ValueError(f"attribute {name!r} is given twice ({seen[name]!r} and {value!r}); give each NAME "
                             f"once.")
        seen[name] = value if isinstance(value, str) else f"<{type(value).__name__}>"


def parse_target(name, value, manifest, extractors=None):
    """A `Target` for NAME=VALUE against a library's manifest; `extractors` `{name: Extractor}` computes the
    features of an exemplar image (needed only for image values)."""
    extractor, columns = _locate(name, manifest)
    description = manifest["extractors"][extractor]
    indices = tuple(description["columns"].index(c) for c in columns)
    spec = value if isinstance(value, str) else f"<{type(value).__name__}>"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if isinstance(value, str) and not columns and not os.path.isfile(value):
        raise ValueError(f"attribute {name!r} is an embedding: its VALUE must be an image file, got {value!r}.")
    if isinstance(value, str) and not os.path.isfile(value):
        text = {"high": HIGH, "low": LOW}.get(value.lower(), value)
        if ".." in text:
            low, high = (_number(t.strip(), name) for t in text.split("..", 1))
            if "bad" not in (low, high) and (low, high) != (None, None):
                check_range(name, low, high, spec)
                return Target(name, extractor, indices, "range", (low, high), spec)
        else:
            number = _number(text, name)
            if number != "bad":
                return Target(name, extractor, indices, "value", number, spec)
        lab = hex_or_name_to_lab(text) if extractor == "color" and name == "color" else None
        if lab is not None:
            return Target(name, extractor, indices, "color", lab, spec)
        raise ValueError(f"attribute {name!r}: VALUE must be a number, a percentile pNN, a range LO..HI, high, "
                         f"low, {'a colour name or #rrggbb, ' if name == 'color' else ''}or an image file; "
                         f"got {value!r}.")
    if extractors is None or extractor not in extractors:
        raise ValueError(f"attribute {name!r} with an exemplar image needs the {extractor!r} extractor to "
                         f"compute its features.")
    features = extractors[extractor](load_image(value))[0]
    if not columns:
        return Target(name, extractor, (), "embedding", features, spec)
    return Target(name, extractor, indices, "exemplar", features[list(indices)], spec)


def resolve_range(target, column):
    """`(low, high)` numbers of a range target (None = open); a range that is empty once read is refused."""
    low, high = (resolve_bound(bound, column) for bound in target.value)
    if low is not None and high is not None and low > high:
        raise ValueError(f"attribute {target.name!r}: the range {target.spec!r} is empty in this library "
                         f"({low:.4g} > {high:.4g}); give LO <= HI.")
    return low, high


def resolve_bound(bound, column):
    """A bound as a number: percentiles are read off `column`'s sorted values (linear interpolation)."""
    if not isinstance(bound, tuple):
        return bound
    ordered = column  # already sorted
    position = bound[1] / 100 * (len(ordered) - 1)
    below = int(position)
    above = min(below + 1, len(ordered) - 1)
    return float(ordered[below] + (ordered[above] - ordered[below]) * (position - below))
