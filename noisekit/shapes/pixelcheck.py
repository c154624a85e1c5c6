"""A non-learned reading of a shapes-world image: background, objects, and their attributes from pixels.

It validates the learned judge: background is the nearest palette colour to the border ring's median; objects
are the connected regions that differ from the background; each object's colour is the nearest palette colour to
its median pixel, its size the larger side of its bounding box, its position the grid cell of its centroid, and
its shape follows from how it fills its bounding box (square 0.85-1, circle 0.72-0.81, cross and triangle 0.49-0.58) and
whether its top is narrower than its bottom (triangle) or not (cross).
"""

from collections import deque

import numpy as np

from .scenes import BACKGROUNDS, CELL_CENTERS, COLORS, POSITIONS, SIZES

_CELL_TO_POSITION = {cell: name for name, (cell, _) in POSITIONS.items()}
MIN_OBJECT_PIXELS = 12
FOREGROUND_DISTANCE = 60.0  # RGB distance from the background that marks an object pixel


def border_ring(image, width=3):
    """Pixels of the outer `width`-pixel ring of an `(H, W, 3)` array."""
    mask = np.zeros(image.shape[:2], dtype=bool)
    mask[:width], mask[-width:], mask[:, :width], mask[:, -width:] = True, True, True, True
    return image[mask]


def border_brightness(image):
    """Median brightness (0-1, mean of RGB) of the border ring: what `on a black background` should make ~0."""
    return float(np.median(border_ring(np.asarray(image, dtype=np.float64)).mean(axis=-1)) / 255.0)


def nearest(rgb, palette):
    names = list(palette)
    distances = [np.linalg.norm(np.asarray(palette[n], dtype=np.float64) - rgb) for n in names]
    return names[int(np.argmin(distances))]


def _components(mask):
    """Connected regions (4-neighbourhood) of a boolean mask, as lists of (row, col)."""
    seen = np.zeros_like(mask)
    regions = []
    for start in zip(*np.nonzero(mask)):
        if seen[start]:
            continue
        seen[start] = True
        queue, region = deque([start]), []
        while queue:
            r, c = queue.popleft()
            region.append((r, c))
            for nr, nc in ((r + 1, c), (r - 1, c), (r, c + 1), (r, c - 1)):
                if 0 <= nr < mask.shape[0] and 0 <= nc < mask.shape[1] and mask[nr, nc] and not seen[nr, nc]:
                    seen[nr, nc] = True
                    queue.append((nr, nc))
        regions.append(np.array(region))
    return regions


def _shape_of(region, coverage):
    """`coverage`: per-pixel share of the object's colour (0-1), so anti-aliased edges count by their share."""
    rows, cols = region[:, 0], region[:, 1]
    height, width = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
    fill = coverage[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1].sum() / float(height * width)
    if fill > 0.83:
        return "square"
    if fill > 0.65:
        return "circle"
    top = rows.min() + height // 4
    bottom = rows.max() - height // 4
    top_width = np.count_nonzero(rows <= top) / max(1, top - rows.min() + 1)
    bottom_width = np.count_nonzero(rows >= bottom) / max(1, rows.max() - bottom + 1)
    return "triangle" if top_width < 0.6 * bottom_width else "cross"


def _cell(value):
    return int(np.argmin([abs(value - c) for c in CELL_CENTERS]))


def read_image(image):
    """`{"background", "objects": [{"color", "shape", "size", "position", "center"}]}` of an RGB image."""
    pixels = np.asarray(image.convert("RGB") if hasattr(image, "convert") else image, dtype=np.float64)
    background = nearest(np.median(border_ring(pixels), axis=0), BACKGROUNDS)
    distance = np.linalg.norm(pixels - np.asarray(BACKGROUNDS[background], dtype=np.float64), axis=-1)
    objects = []
    for region in _components(distance > FOREGROUND_DISTANCE):
        if len(region) < MIN_OBJECT_PIXELS:
            continue
        full = np.percentile(distance[region[:, 0], region[:, 1]], 90)
        coverage = np.clip(distance / full, 0, 1)
        region = region[coverage[region[:, 0], region[:, 1]] > 0.5]
        rows, cols = region[:, 0], region[:, 1]
        extent = max(rows.max() - rows.min() + 1, cols.max() - cols.min() + 1)
        center = (float(cols.mean()), float(rows.mean()))
        # The median of the core pixels (furthest from the background) resists anti-aliased edges.
        core = distance[rows, cols] >= np.percentile(distance[rows, cols], 50)
        color = nearest(np.median(pixels[rows[core], cols[core]], axis=0), COLORS)
        size = min(SIZES, key=lambda s: abs(SIZES[s] - extent))
        objects.append({"color": color, "shape": _shape_of(region, coverage), "size": size, "center": center,
                        "position": _CELL_TO_POSITION[(_cell(center[0]), _cell(center[1]))], "pixels": len(region)})
    objects.sort(key=lambda o: -o["pixels"])
    return {"background": background, "objects": objects}


def relation_holds(relation, first, second, gap=8.0):
    """Whether `first`'s centre lies at least `gap` px (half the world's 16) in the stated direction of `second`'s."""
    dx, dy = first["center"][0] - second["center"][0], first["center"][1] - second["center"][1]
    return {"to the left of": dx <= -gap, "to the right of": dx >= gap, "above": dy <= -gap, "below": dy >= gap}[relation]
