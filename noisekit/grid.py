"""Labelled image grids (demo sheets, search candidates with their scores)."""

from PIL import Image, ImageDraw, ImageFont


def labelled_grid(rows, row_labels, cell_labels=None, cell_size=128):
    """`rows`: lists of PIL images; each row gets its label above it, each cell an optional label under it."""
    font = ImageFont.load_default()
    columns = max(len(r) for r in rows)
    label_height, cell_label_height = 16, 14 if cell_labels else 0
    row_height = label_height + cell_size + cell_label_height
    sheet = Image.new("RGB", (columns * cell_size, len(rows) * row_height), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for r, (images, label) in enumerate(zip(rows, row_labels)):
        top = r * row_height
        draw.text((4, top + 2), label, fill=(0, 0, 0), font=font)
        for c, image in enumerate(images):
            sheet.paste(image.convert("RGB").resize((cell_size, cell_size), Image.NEAREST),
                        (c * cell_size, top + label_height))
            if cell_labels:
                draw.text((c * cell_size + 4, top + label_height + cell_size + 1), cell_labels[r][c],
                          fill=(0, 0, 0), font=font)
    return sheet
