"""Grids with legends for scripts (X/Y/Z plot, Prompt matrix): cells in rows and columns, labels on the top
(columns) and on the left (rows), A1111's layout. Pillow draws the text; the layout is written here by hand
because no library lays out A1111's annotated grids."""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont

TEXT_COLOUR = (0, 0, 0)
BACKGROUND = (255, 255, 255)


def font_for(cell_width: int, cell_height: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """A1111's legend font size: (cell width + height) // 25."""
    return ImageFont.load_default(size=max((cell_width + cell_height) // 25, 1))


def wrap(text: str, font: ImageFont.ImageFont | ImageFont.FreeTypeFont, width: int) -> list[str]:
    """Words into lines no wider than ``width`` (a single long word stays on its line)."""
    lines: list[str] = []
    for paragraph in text.split("\n"):
        line = ""
        for word in paragraph.split(" "):
            candidate = f"{line} {word}".strip()
            if line and font.getlength(candidate) > width:
                lines.append(line)
                line = word
            else:
                line = candidate
        lines.append(line)
    return [line for line in lines if line] or []


def text_height(lines: list[str], font: ImageFont.ImageFont | ImageFont.FreeTypeFont, spacing: int) -> int:
    """The lines' heights (each line's ink box) with ``spacing`` between them."""
    if not lines:
        return 0
    heights = [font.getbbox(line)[3] - font.getbbox(line)[1] for line in lines]
    return sum(heights) + spacing * (len(lines) - 1)


def annotated_grid(
    cells: Sequence[Image.Image],
    columns: int,
    column_labels: Sequence[str],
    row_labels: Sequence[str],
    margin: int = 0,
) -> Image.Image:
    """``cells`` in rows of ``columns`` (row-major), with ``column_labels`` above and ``row_labels`` on the left;
    empty labels take no room (no legend: pass empty strings)."""
    rows = max((len(cells) + columns - 1) // columns, 1)
    width, height = cells[0].size
    font = font_for(width, height)
    column_lines = [wrap(label, font, width) for label in column_labels]
    row_lines = [wrap(label, font, width * 3 // 4) for label in row_labels]
    pad_left = width * 3 // 4 if any(row_lines) else 0
    line_spacing = int(getattr(font, "size", 10)) // 2
    tallest = max((text_height(lines, font, line_spacing) for lines in column_lines), default=0)
    pad_top = tallest + line_spacing * 2 if tallest else 0
    canvas = Image.new(
        "RGB",
        (pad_left + columns * width + (columns - 1) * margin, pad_top + rows * height + (rows - 1) * margin),
        BACKGROUND,
    )
    for index, cell in enumerate(cells):
        row, column = divmod(index, columns)
        canvas.paste(cell.convert("RGB"), (pad_left + (width + margin) * column, pad_top + (height + margin) * row))
    draw = ImageDraw.Draw(canvas)
    for column, lines in enumerate(column_lines):
        centre = pad_left + (width + margin) * column + width // 2
        draw_lines(draw, lines, font, centre, pad_top // 2)
    for row, lines in enumerate(row_lines):
        draw_lines(draw, lines, font, pad_left // 2, pad_top + (height + margin) * row + height // 2)
    return canvas


def draw_lines(
    draw: ImageDraw.ImageDraw,
    lines: list[str],
    font: ImageFont.ImageFont | ImageFont.FreeTypeFont,
    centre_x: int,
    centre_y: int,
) -> None:
    if not lines:
        return
    draw.multiline_text(
        (centre_x, centre_y), "\n".join(lines), font=font, fill=TEXT_COLOUR, anchor="mm", align="center"
    )


def side_by_side(images: Sequence[Image.Image], margin: int = 0) -> Image.Image:
    """Sub-grids in one row (X/Y/Z's main grid), top-aligned on white."""
    if len(images) == 1:
        return images[0]
    width = sum(image.width for image in images) + margin * (len(images) - 1)
    canvas = Image.new("RGB", (width, max(image.height for image in images)), BACKGROUND)
    left = 0
    for image in images:
        canvas.paste(image.convert("RGB"), (left, 0))
        left += image.width + margin
    return canvas
