"""Tiled inference for image-to-image models, with feathered (linearly weighted) blending of the overlaps.

Written by hand: spandrel runs a model on one tensor and leaves tiling to the application.
The tiles form a grid; each tile's output is weighted by a separable ramp that rises across the overlap it
shares with a neighbour (never at the image border). Because the grid is separable, the sum of the weights
is the outer product of two 1-D sums, so the weights are normalised per axis up front and the tiles are
added straight into the output: no 2-D weight buffer, and the weights sum to exactly 1 at every pixel.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

logger = logging.getLogger(__name__)

DEFAULT_TILE_SIZE = 192
DEFAULT_TILE_OVERLAP = 8

ImageModel = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class AxisTile:
    """One tile's extent along one axis, in input pixels."""

    start: int
    length: int
    first: bool
    last: bool


def plan_axis(length: int, tile_size: int, tile_overlap: int) -> list[AxisTile]:
    """Tiles along one axis, overlapping by at least ``tile_overlap``; the first and last flush with the edges."""
    if tile_size <= 0 or length <= tile_size:
        return [AxisTile(0, length, first=True, last=True)]
    overlap = min(max(tile_overlap, 0), tile_size // 2)
    count = math.ceil((length - overlap) / (tile_size - overlap))
    # spread the tiles evenly: every overlap is at least ``overlap``, the last tile ends at the edge
    starts = [round(index * (length - tile_size) / (count - 1)) for index in range(count)]
    return [
        AxisTile(start, tile_size, first=index == 0, last=index == len(starts) - 1)
        for index, start in enumerate(starts)
    ]


def ramp_weights(tile: AxisTile, scale: float, overlap: int, out_length: int, device: torch.device) -> torch.Tensor:
    """A 1-D weight along one output tile: rises over the overlap on sides that touch another tile."""
    size = round(tile.length * scale)
    positions = torch.arange(size, device=device, dtype=torch.float32) + 0.5
    width = max(overlap * scale, 1.0)
    weight = torch.ones(size, device=device, dtype=torch.float32)
    if not tile.first:
        weight = torch.minimum(weight, positions / width)
    if not tile.last:
        weight = torch.minimum(weight, (size - positions) / width)
    full = torch.zeros(out_length, device=device, dtype=torch.float32)
    begin = round(tile.start * scale)
    end = min(begin + size, out_length)
    full[begin:end] = weight[: end - begin]
    return full


def normalised_axis_weights(
    tiles: list[AxisTile], scale: float, overlap: int, out_length: int, device: torch.device
) -> list[torch.Tensor]:
    """Each tile's ramp divided by the sum over all tiles of this axis, so the weights sum to 1."""
    ramps = [ramp_weights(tile, scale, overlap, out_length, device) for tile in tiles]
    total = torch.stack(ramps).sum(dim=0).clamp_min(1e-8)
    return [ramp / total for ramp in ramps]


def run_tiled(
    image: torch.Tensor,
    model: ImageModel,
    tile_size: int = DEFAULT_TILE_SIZE,
    tile_overlap: int = DEFAULT_TILE_OVERLAP,
) -> torch.Tensor:
    """Run ``model`` on ``image`` (1, C, H, W) tile by tile and blend; any integer or fractional scale.

    ``tile_size <= 0`` (or an image that fits in one tile) runs the model once on the whole image.
    """
    _, _, height, width = image.shape
    tile_overlap = min(max(tile_overlap, 0), max(tile_size, 0) // 2)
    rows = plan_axis(height, tile_size, tile_overlap)
    columns = plan_axis(width, tile_size, tile_overlap)
    if len(rows) == 1 and len(columns) == 1:
        return model(image)
    logger.debug(
        "tiles=%d rows=%d columns=%d tile_size=%d", len(rows) * len(columns), len(rows), len(columns), tile_size
    )
    output: torch.Tensor | None = None
    scale = 1.0
    row_weights: list[torch.Tensor] = []
    column_weights: list[torch.Tensor] = []
    for row_index, row in enumerate(rows):
        for column_index, column in enumerate(columns):
            piece = image[:, :, row.start : row.start + row.length, column.start : column.start + column.length]
            result = model(piece)
            if output is None:
                scale = result.shape[-1] / column.length
                out_height, out_width = int(height * scale), int(width * scale)
                output = torch.zeros(
                    (1, result.shape[1], out_height, out_width), device=result.device, dtype=torch.float32
                )
                row_weights = normalised_axis_weights(rows, scale, tile_overlap, out_height, result.device)
                column_weights = normalised_axis_weights(columns, scale, tile_overlap, out_width, result.device)
            top, left = round(row.start * scale), round(column.start * scale)
            add_tile(output, result, (top, left), row_weights[row_index], column_weights[column_index])
    assert output is not None
    return output.to(image.dtype)


def add_tile(
    output: torch.Tensor,
    tile: torch.Tensor,
    corner: tuple[int, int],
    row_weight: torch.Tensor,
    column_weight: torch.Tensor,
) -> None:
    """Add a tile, weighted by the outer product of its row and column weights, at ``corner`` (top, left)."""
    top, left = corner
    bottom = min(top + tile.shape[-2], output.shape[-2])
    right = min(left + tile.shape[-1], output.shape[-1])
    weight = row_weight[top:bottom, None] * column_weight[None, left:right]
    output[:, :, top:bottom, left:right] += tile[:, :, : bottom - top, : right - left].float() * weight
