"""DeepCache (Ma, Fang & Wang 2024) for diffusers' UNet2DConditionModel, as a UNet wrapper given to one request.

Written by hand: the DeepCache package replaces the UNet's forward functions (a monkey patch). This wrapper
calls the UNet's own blocks: every ``interval`` steps it runs the whole UNet and keeps the input of the last
up block (the deep features); on the steps between, it runs only the shallow path (conv_in, the first down
block, the last up block with the kept deep features, the output layers). It is built per request, so the
cache never outlives one denoising loop; ``interval`` 1 is the plain UNet. The cache holds one entry per
batch shape (an img2img hires pass and a first pass never share it).
"""

from __future__ import annotations

from typing import Any

import torch

from modules.compute.unet_wrapper import WrappedUNet

SUPPORTED_ARGUMENTS = frozenset(
    {"timestep_cond", "cross_attention_kwargs", "added_cond_kwargs", "return_dict", "class_labels"}
)


class DeepCacheUNet(WrappedUNet):
    """A UNet2DConditionModel that reuses its deep features for ``interval - 1`` steps out of ``interval``."""

    def __init__(self, unet: torch.nn.Module, interval: int) -> None:
        super().__init__(unet)
        if interval < 1:
            raise ValueError("DeepCache interval must be at least 1")
        self.interval = interval
        self.calls = 0
        self.full_calls = 0
        self._deep: torch.Tensor | None = None

    def forward(self, sample: torch.Tensor, timestep: Any, encoder_hidden_states: torch.Tensor, **kwargs: Any):
        unsupported = {key for key, value in kwargs.items() if value is not None} - SUPPORTED_ARGUMENTS
        if self.interval == 1 or unsupported:
            return self.unet(sample, timestep, encoder_hidden_states, **kwargs)
        full = self.calls % self.interval == 0 or self._deep is None or self._deep.shape[0] != sample.shape[0]
        self.calls += 1
        output = self._run(sample, timestep, encoder_hidden_states, kwargs, full)
        return (output,) if not kwargs.get("return_dict", True) else _Output(output)

    def _embeddings(self, sample: torch.Tensor, timestep: Any, encoder_hidden_states: torch.Tensor, kwargs: dict):
        unet = self.unet
        embedding = unet.time_embedding(
            unet.get_time_embed(sample=sample, timestep=timestep), kwargs.get("timestep_cond")
        )
        class_embedding = unet.get_class_embed(sample=sample, class_labels=kwargs.get("class_labels"))
        if class_embedding is not None:
            embedding = (
                torch.cat([embedding, class_embedding], dim=-1)
                if unet.config.class_embeddings_concat
                else embedding + class_embedding
            )
        added = kwargs.get("added_cond_kwargs")
        augmented = unet.get_aug_embed(
            emb=embedding, encoder_hidden_states=encoder_hidden_states, added_cond_kwargs=added
        )
        if augmented is not None:
            embedding = embedding + augmented
        if unet.time_embed_act is not None:
            embedding = unet.time_embed_act(embedding)
        states = unet.process_encoder_hidden_states(
            encoder_hidden_states=encoder_hidden_states, added_cond_kwargs=added
        )
        return embedding, states

    def _run(
        self, sample: torch.Tensor, timestep: Any, encoder_hidden_states: torch.Tensor, kwargs: dict, full: bool
    ) -> torch.Tensor:
        unet = self.unet
        if unet.config.center_input_sample:
            sample = 2 * sample - 1.0
        embedding, states = self._embeddings(sample, timestep, encoder_hidden_states, kwargs)
        attention = kwargs.get("cross_attention_kwargs")
        upsample_needed = any(size % (2**unet.num_upsamplers) for size in sample.shape[-2:])
        hidden = unet.conv_in(sample)
        residuals: tuple[torch.Tensor, ...] = (hidden,)
        blocks = unet.down_blocks if full else unet.down_blocks[:1]
        for block in blocks:
            hidden, block_residuals = _run_block(block, hidden, embedding, states, attention)
            residuals += block_residuals
        if full:
            if unet.mid_block is not None:
                hidden = _run_mid(unet.mid_block, hidden, embedding, states, attention)
            for block in unet.up_blocks[:-1]:
                block_residuals, residuals = residuals[-len(block.resnets) :], residuals[: -len(block.resnets)]
                size = residuals[-1].shape[2:] if upsample_needed else None
                hidden = _run_block(block, hidden, embedding, states, attention, block_residuals, size)
            self.full_calls += 1
            self._deep = hidden
        else:
            residuals = residuals[: len(unet.up_blocks[-1].resnets)]
        last = unet.up_blocks[-1]
        hidden = _run_block(last, self._deep, embedding, states, attention, residuals[-len(last.resnets) :], None)
        if unet.conv_norm_out:
            hidden = unet.conv_act(unet.conv_norm_out(hidden))
        return unet.conv_out(hidden)


def _run_block(block, hidden, embedding, states, attention, residuals=None, upsample_size=None):
    """One down block (residuals None) or up block of the UNet, with or without cross-attention."""
    cross = getattr(block, "has_cross_attention", False)
    if residuals is None:
        if cross:
            return block(
                hidden_states=hidden, temb=embedding, encoder_hidden_states=states, cross_attention_kwargs=attention
            )
        return block(hidden_states=hidden, temb=embedding)
    arguments: dict[str, Any] = {"res_hidden_states_tuple": residuals, "upsample_size": upsample_size}
    if cross:
        arguments.update(encoder_hidden_states=states, cross_attention_kwargs=attention)
    return block(hidden_states=hidden, temb=embedding, **arguments)


def _run_mid(block, hidden, embedding, states, attention):
    if getattr(block, "has_cross_attention", False):
        return block(hidden, embedding, encoder_hidden_states=states, cross_attention_kwargs=attention)
    return block(hidden, embedding)


class _Output:
    """The ``.sample`` shape of UNet2DConditionOutput, for pipelines that read it by attribute."""

    def __init__(self, sample: torch.Tensor) -> None:
        self.sample = sample

    def __getitem__(self, index: int) -> torch.Tensor:
        return (self.sample,)[index]
