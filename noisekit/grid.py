"""Labelled image grids (demo sheets, search candidates with their scores)."""

import math

from PIL import Image, ImageDraw, ImageFont

MAX_COLUMNS = 16  # cells per line: 16 x 128 px = 2048 px, wide enough for a screen, narrow enough to read


def labelled_grid(rows, row_labels, cell_labels=None, cell_size=128, *, max_columns=MAX_COLUMNS):
    """`rows`: lists of PIL images; each row gets its label above it, each cell an optional label under it.

    A row longer than `max_columns` wraps onto further lines of the same row, so the sheet stays at most
    `max_columns * cell_size` pixels wide however many candidates a search has (256 candidates: 16 lines of 16),
    and every candidate is still shown at full cell size with its label.
    """
    if isinstance(max_columns, bool) or not isinstance(max_columns, int) or max_columns < 1:
        raise ValueError(f"`max_columns` must be a positive integer, got {max_columns!r}.")
    font = ImageFont.load_default()
    columns = min(max_columns, max(len(r) for r in rows))
    label_height, cell_label_height = 16, 14 if cell_labels else 0
    line_height = cell_size + cell_label_height
    lines = [max(1, math.ceil(len(r) / columns)) for r in rows]
    sheet = Image.new("RGB", (columns * cell_size, sum(label_height + n * line_height for n in lines)),
                      (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    top = 0
    for r, (images, label) in enumerate(zip(rows, row_labels)):
        draw.text((4, top + 2), label, fill=(0, 0, 0), font=font)
        for i, image in enumerate(images):
            left, cell_top = (i % columns) * cell_size, top + label_height + (i // columns) * line_height
            sheet.paste(image.convert("RGB").resize((cell_size, cell_size), Image.NEAREST), (left, cell_top))
            if cell_labels:
                draw.text((left + 4, cell_top + cell_size + 1), cell_labels[r][i], fill=(0, 0, 0), font=font)
        top += label_height + lines[r] * line_height
    return sheet
