"""Token merging (ToMe for Stable Diffusion, Bolya & Hoffman 2023) through diffusers' attention-processor API.

Written by hand: the ``tomesd`` package swaps the classes of the UNet's transformer blocks (a monkey patch) and
is not kept up with diffusers. Here a processor wraps the self-attention's own processor: it merges the most
similar tokens (bipartite soft matching, a 2x2 stride of destination tokens), runs the wrapped processor on the
fewer tokens and unmerges its output. As in tomesd's defaults, only self-attention at the full latent
resolution merges (``max_downsample`` 1); cross-attention and the MLP are untouched. The destination token of
each 2x2 cell is its top-left one (deterministic; tomesd draws it at random).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

MergeFunctions = tuple[Callable[[torch.Tensor], torch.Tensor], Callable[[torch.Tensor], torch.Tensor]]


@dataclass
class LatentSize:
    """The latent height and width of the UNet call in progress (set by a forward pre-hook on the UNet)."""

    height: int = 0
    width: int = 0


def bipartite_soft_matching(metric: torch.Tensor, height: int, width: int, ratio: float) -> MergeFunctions:
    """merge/unmerge functions that remove ``int(tokens * ratio)`` tokens of a (batch, height*width, C) tensor."""
    batch, tokens, _ = metric.shape
    cells_y, cells_x = height // 2, width // 2
    removed = min(int(tokens * ratio), tokens - cells_y * cells_x)
    if removed <= 0 or cells_y == 0 or cells_x == 0:
        return (lambda tensor: tensor), (lambda tensor: tensor)
    device = metric.device
    is_destination = torch.zeros(height, width, dtype=torch.bool, device=device)
    is_destination[: cells_y * 2 : 2, : cells_x * 2 : 2] = True
    order = torch.argsort(~is_destination.flatten(), stable=True)  # destinations first, then sources
    destination_count = cells_y * cells_x
    destination_index, source_index = order[:destination_count], order[destination_count:]
    with torch.no_grad():
        normed = metric / metric.norm(dim=-1, keepdim=True).clamp_min(1e-6)
        scores = normed[:, source_index] @ normed[:, destination_index].transpose(-1, -2)
        best_score, best_destination = scores.max(dim=-1)
        ranked = best_score.argsort(dim=-1, descending=True)
        merged_sources = ranked[:, :removed]  # positions within the sources
        kept_sources = ranked[:, removed:]
        targets = best_destination.gather(1, merged_sources)  # positions within the destinations

    def merge(tensor: torch.Tensor) -> torch.Tensor:
        channels = tensor.shape[-1]
        sources, destinations = tensor[:, source_index], tensor[:, destination_index]
        kept = sources.gather(1, kept_sources[..., None].expand(-1, -1, channels))
        moving = sources.gather(1, merged_sources[..., None].expand(-1, -1, channels))
        destinations = destinations.scatter_reduce(
            1, targets[..., None].expand(-1, -1, channels), moving, reduce="mean", include_self=True
        )
        return torch.cat([kept, destinations], dim=1)

    def unmerge(tensor: torch.Tensor) -> torch.Tensor:
        channels = tensor.shape[-1]
        kept_count = kept_sources.shape[1]
        kept, destinations = tensor[:, :kept_count], tensor[:, kept_count:]
        moved = destinations.gather(1, targets[..., None].expand(-1, -1, channels))
        output = tensor.new_zeros(batch, tokens, channels)
        output[:, destination_index] = destinations
        output.scatter_(1, source_index[kept_sources][..., None].expand(-1, -1, channels), kept)
        output.scatter_(1, source_index[merged_sources][..., None].expand(-1, -1, channels), moved)
        return output

    return merge, unmerge


@dataclass
class TokenMergingProcessor:
    """Wraps a self-attention processor: merge tokens, attend with the wrapped processor, unmerge."""

    inner: Any
    ratio: float
    size: LatentSize
    max_downsample: int = 1
    calls: int = field(default=0, compare=False)

    def __call__(
        self,
        attn: Any,
        hidden_states: torch.Tensor,
        encoder_hidden_states=None,
        attention_mask=None,
        temb=None,
        **kwargs: Any,
    ) -> torch.Tensor:
        grid = self._grid(hidden_states)
        if grid is None or encoder_hidden_states is not None or attention_mask is not None or attn.residual_connection:
            return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, temb, **kwargs)
        self.calls += 1
        merge, unmerge = bipartite_soft_matching(hidden_states, grid[0], grid[1], self.ratio)
        output = self.inner(attn, merge(hidden_states), None, None, temb, **kwargs)
        return unmerge(output)

    def _grid(self, hidden_states: torch.Tensor) -> tuple[int, int] | None:
        """(height, width) of the tokens when they are a full-resolution latent grid (within max_downsample)."""
        if hidden_states.ndim != 3 or self.size.height == 0:
            return None
        tokens = hidden_states.shape[1]
        downsample = 1
        while downsample <= self.max_downsample:
            height = math.ceil(self.size.height / downsample)
            width = math.ceil(self.size.width / downsample)
            if height * width == tokens:
                return height, width
            downsample *= 2
        return None


class TokenMerging:
    """Installs token-merging processors on a UNet's self-attention layers and removes them again."""

    def __init__(self, unet: torch.nn.Module, ratio: float, max_downsample: int = 1) -> None:
        self.unet = unet
        self.ratio = ratio
        self.size = LatentSize()
        self._original = dict(unet.attn_processors)
        processors = {
            name: TokenMergingProcessor(processor, ratio, self.size, max_downsample)
            if name.endswith("attn1.processor")
            else processor
            for name, processor in self._original.items()
        }
        self._hook = unet.register_forward_pre_hook(self._record_size, with_kwargs=True)
        unet.set_attn_processor(processors)

    def _record_size(self, module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        sample = args[0] if args else kwargs["sample"]
        self.size.height, self.size.width = int(sample.shape[-2]), int(sample.shape[-1])

    @property
    def processors(self) -> list[TokenMergingProcessor]:
        return [item for item in self.unet.attn_processors.values() if isinstance(item, TokenMergingProcessor)]

    def remove(self) -> None:
        self._hook.remove()
        self.unet.set_attn_processor(self._original)
