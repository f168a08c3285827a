"""Textual-inversion embeddings: formats, registration through the PromptEncoder seam, skipping."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from modules.networks.embeddings import EmbeddingError, incompatibility, read_embedding, register_embeddings
from modules.prompts.conditioning import PromptEncoder, TextEncoderPart
from modules.tiny_model import build_tiny_pipeline

CONFIGS = Path(__file__).resolve().parent.parent / "configs" / "sd15"


def tiny_encoder() -> PromptEncoder:
    pipeline = build_tiny_pipeline(seed=5)
    return PromptEncoder.for_pipeline(pipeline, model_key="tiny")


@pytest.fixture(scope="module")
def sd15_encoder() -> PromptEncoder:
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(CLIPTextConfig.from_json_file(CONFIGS / "text_encoder" / "config.json")).eval()
    tokenizer = CLIPTokenizer.from_pretrained(CONFIGS / "tokenizer", local_files_only=True)
    return PromptEncoder([TextEncoderPart(tokenizer, text_encoder)], model_key="sd15-random")


def test_multi_vector_safetensors_and_weighted_syntax(tmp_path):
    encoder = tiny_encoder()
    path = tmp_path / "shinytoken.safetensors"
    save_file({"emb_params": torch.randn(3, 32) * 5}, str(path))
    embedding = read_embedding(path)
    assert embedding.vector_count == 3
    plain = encoder.encode("a photo, shinytoken").embeds.clone()
    weighted_before = encoder.encode("a photo, (shinytoken:1.2)").embeds.clone()
    register_embeddings(encoder, [embedding])
    after = encoder.encode("a photo, shinytoken").embeds
    assert not torch.allclose(plain, after)
    assert not torch.allclose(weighted_before, encoder.encode("a photo, (shinytoken:1.2)").embeds)
    # the three vectors sit where the trigger was: BOS + "a photo ," (3 tokens) + 3 vectors
    chunk = encoder.chunk_text("a photo, shinytoken")[0]
    assert chunk.tokens[4:7] == tuple(range(49408, 49411))
    unrelated = encoder.encode("a photo of a dog").embeds
    assert unrelated.shape == plain.shape


def test_sdxl_pair_and_wrong_size_are_skipped_with_reason(tmp_path):
    encoder = tiny_encoder()
    path = tmp_path / "xl.safetensors"
    save_file({"clip_l": torch.randn(2, 768), "clip_g": torch.randn(2, 1280)}, str(path))
    reason = incompatibility(read_embedding(path), encoder)
    assert reason is not None and "768/1280" in reason and "32" in reason


def test_not_an_embedding_is_a_clear_error(tmp_path):
    path = tmp_path / "junk.safetensors"
    save_file({"a": torch.zeros(2), "b": torch.zeros(3)}, str(path))
    with pytest.raises(EmbeddingError, match="not a textual-inversion embedding"):
        read_embedding(path)


@pytest.mark.parametrize(
    ("file_name", "trigger", "vectors"),
    [
        ("EasyNegative.pt", "EasyNegative", 8),
        ("EasyNegativeV2.safetensors", "EasyNegativeV2", 16),
        ("badhandv4.pt", "badhandv4", 6),
        ("birb-style.learned_embeds.bin", "<birb-style>", 1),
    ],
)
def test_real_embeddings_work_in_an_sd15_text_encoder(testdata, sd15_encoder, file_name, trigger, vectors):
    embedding = read_embedding(testdata / "embeddings" / file_name)
    assert embedding.vector_count == vectors
    assert trigger in embedding.triggers
    assert incompatibility(embedding, sd15_encoder) is None
    prompt = f"a house, ({trigger}:1.2)"
    before = sd15_encoder.encode(prompt).embeds.clone()
    register_embeddings(sd15_encoder, [embedding])
    after = sd15_encoder.encode(prompt).embeds
    assert not torch.allclose(before, after)
    row = sd15_encoder.parts[0].text_encoder.get_input_embeddings().weight[-vectors:]
    torch.testing.assert_close(row, next(iter(embedding.vectors.values())))
