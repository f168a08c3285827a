"""Textual-inversion embeddings: read every common file format, register them with a model's prompt encoder.

Formats: A1111 ``.pt`` (``string_to_param``), A1111 ``.safetensors`` / ``.pt`` (``emb_params``), diffusers
``learned_embeds.bin`` / ``.safetensors`` (``{token: vector}``), multi-vector embeddings, and SDXL embeddings
(``clip_l`` + ``clip_g``). Pickles are read only with ``torch.load(weights_only=True)``.

Registration uses the PromptEncoder seam (``TextEncoderPart.embedding_tokens``): the vectors become new rows
of each text encoder's input embeddings (``resize_token_embeddings``, as diffusers' ``load_textual_inversion``
does), and the token ids of the trigger word, as the model's own tokenizer splits it, map to those rows.
A1111's trigger is the file name; diffusers files are also reachable through their own token.
"""

from __future__ import annotations

import dataclasses
import logging
import pickle
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from modules.models.errors import ModelError
from modules.models.safe_load import is_safetensors, load_safetensors
from modules.prompts.conditioning import PromptEncoder

logger = logging.getLogger(__name__)

EMBEDDING_SUFFIXES = frozenset({".pt", ".safetensors", ".bin"})
SDXL_KEYS = ("clip_l", "clip_g")


class EmbeddingError(ValueError):
    """An embedding file that cannot be read; the message is for the user."""


@dataclass(frozen=True)
class Embedding:
    """One embedding: its trigger words and vectors ([n, dim] per text encoder key, or one tensor)."""

    name: str
    path: Path
    vectors: Mapping[str, torch.Tensor]  # "" for single-encoder files; "clip_l"/"clip_g" for SDXL
    triggers: tuple[str, ...]

    @property
    def vector_count(self) -> int:
        return int(next(iter(self.vectors.values())).shape[0])

    @property
    def dims(self) -> tuple[int, ...]:
        return tuple(int(tensor.shape[-1]) for tensor in self.vectors.values())

    def vectors_for(self, hidden_size: int, part_index: int, part_count: int) -> torch.Tensor | None:
        """The vectors for one text encoder of a model, or None when the file has none of that width."""
        if "" in self.vectors:
            single = self.vectors[""]
            return single if part_count == 1 and single.shape[-1] == hidden_size else None
        key = SDXL_KEYS[part_index] if part_count == 2 else None
        chosen = self.vectors.get(key) if key else None
        return chosen if chosen is not None and chosen.shape[-1] == hidden_size else None


def _as_matrix(tensor: torch.Tensor) -> torch.Tensor:
    tensor = tensor.detach().float()
    return tensor.reshape(1, -1) if tensor.dim() == 1 else tensor.reshape(-1, tensor.shape[-1])


def _read_raw(path: Path) -> Mapping[str, object]:
    if is_safetensors(path):
        try:
            return load_safetensors(path)
        except ModelError as error:
            raise EmbeddingError(f"{path.name}: damaged safetensors file") from error
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise EmbeddingError(
            f"{path.name}: refused, it holds more than tensors ({str(error).splitlines()[0]})"
        ) from None
    except Exception as error:  # any failure to parse an untrusted file means it is damaged
        raise EmbeddingError(f"{path.name}: unreadable ({type(error).__name__})") from error
    if not isinstance(loaded, Mapping):
        raise EmbeddingError(f"{path.name}: expected a dict, found {type(loaded).__name__}")
    return loaded


def embedding_name(path: Path) -> str:
    """A1111's trigger: the file name without its extension."""
    return path.name[: -len(path.suffix)] if path.suffix else path.name


def read_embedding(path: Path) -> Embedding:
    """Read one embedding file of any supported format; any damage is an EmbeddingError naming the file."""
    raw = _read_raw(path)
    try:
        embedding = _embedding_from(path, raw)
    except (RuntimeError, IndexError, TypeError) as error:  # tensors of shapes no embedding has
        raise EmbeddingError(f"{path.name}: not a textual-inversion embedding ({type(error).__name__})") from error
    if any(tensor.dim() != 2 or 0 in tensor.shape for tensor in embedding.vectors.values()):
        raise EmbeddingError(f"{path.name}: holds no vectors")
    return embedding


def _embedding_from(path: Path, raw: Mapping[str, object]) -> Embedding:
    name = embedding_name(path)
    triggers = [name]
    if "string_to_param" in raw and isinstance(raw["string_to_param"], Mapping):
        params = list(raw["string_to_param"].values())
        vectors = {"": _as_matrix(params[0])} if params and isinstance(params[0], torch.Tensor) else {}
    elif "emb_params" in raw and isinstance(raw["emb_params"], torch.Tensor):
        vectors = {"": _as_matrix(raw["emb_params"])}
    elif all(key in raw for key in SDXL_KEYS):
        vectors = {key: _as_matrix(raw[key]) for key in SDXL_KEYS}  # type: ignore[arg-type]
    else:
        tensors = {key: value for key, value in raw.items() if isinstance(value, torch.Tensor)}
        vectors = {"": _as_matrix(next(iter(tensors.values())))} if len(tensors) == 1 else {}
        triggers.extend(tensors if len(tensors) == 1 else ())  # diffusers: the file's own token
    if not vectors:
        raise EmbeddingError(f"{path.name}: not a textual-inversion embedding (keys: {', '.join(list(raw)[:5])})")
    return Embedding(name=name, path=path, vectors=vectors, triggers=tuple(dict.fromkeys(triggers)))


def hidden_sizes(encoder: PromptEncoder) -> list[int]:
    return [int(part.text_encoder.get_input_embeddings().weight.shape[1]) for part in encoder.parts]


def incompatibility(embedding: Embedding, encoder: PromptEncoder) -> str | None:
    """Why ``embedding`` cannot be used with this model, or None when it can."""
    sizes = hidden_sizes(encoder)
    for index, size in enumerate(sizes):
        if embedding.vectors_for(size, index, len(sizes)) is None:
            have = "/".join(str(dim) for dim in embedding.dims)
            return f"vector size {have} does not fit the model's text encoder (hidden size {'/'.join(map(str, sizes))})"
    return None


def register_embeddings(encoder: PromptEncoder, embeddings: Sequence[Embedding]) -> None:
    """Add the vectors of compatible ``embeddings`` as new token rows, one resize per text encoder.

    Call ``incompatibility`` first; the encoder's cache is cleared because tokenisation changed.
    """
    if not embeddings:
        return
    parts = list(encoder.parts)
    for index, part in enumerate(parts):
        text_encoder = part.text_encoder
        table = text_encoder.get_input_embeddings()
        size = int(table.weight.shape[1])
        rows = [embedding.vectors_for(size, index, len(parts)) for embedding in embeddings]
        start = int(table.weight.shape[0])
        text_encoder.resize_token_embeddings(start + sum(int(row.shape[0]) for row in rows), mean_resizing=False)
        weight = text_encoder.get_input_embeddings().weight
        mapping = dict(part.embedding_tokens)
        position = start
        with torch.no_grad():
            for embedding, row in zip(embeddings, rows, strict=True):
                weight[position : position + row.shape[0]] = row.to(weight.device, weight.dtype)
                ids = tuple(range(position, position + row.shape[0]))
                position += row.shape[0]
                for trigger in embedding.triggers:
                    tokens = part.tokenizer(trigger, add_special_tokens=False)["input_ids"]
                    mapping[tuple(tokens)] = ids
        parts[index] = dataclasses.replace(part, embedding_tokens=mapping)
    encoder.parts = tuple(parts)
    encoder.cache.clear()
    logger.info("embeddings registered count=%d names=%s", len(embeddings), ",".join(e.name for e in embeddings))
