"""Prompt conditioning on the tiny pipeline's real CLIP tokenizer and random 5-layer text encoder."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace

import pytest
import torch

from modules.paths import INSTALL_DIR
from modules.prompts.conditioning import (
    Emphasis,
    EncodingCache,
    PromptEncoder,
    PromptEncodingError,
    apply_emphasis,
)

LONG_PROMPT = ", ".join(f"a red cat number {index}" for index in range(30))  # about 180 tokens


@pytest.fixture
def encoder(tiny_pipeline) -> PromptEncoder:
    return PromptEncoder.for_pipeline(tiny_pipeline, model_key="tiny")


@pytest.fixture
def forward_calls(tiny_pipeline) -> Iterator[list[int]]:
    """Batch sizes of every real forward pass of the tiny text encoder (a hook, not a mock)."""
    calls: list[int] = []
    handle = tiny_pipeline.text_encoder.register_forward_hook(lambda module, args, output: calls.append(len(args[0])))
    yield calls
    handle.remove()


def content_tokens(encoder: PromptEncoder, text: str) -> list[list[int]]:
    return [list(chunk.tokens[1 : 1 + chunk.content_length]) for chunk in encoder.chunk_text(text)]


def test_short_prompt_is_one_chunk_of_77_rows(encoder: PromptEncoder) -> None:
    embedding = encoder.encode("a photo of a cat")
    assert embedding.embeds.shape == (1, 77, 32)
    assert embedding.pooled is None


def test_long_prompt_keeps_its_tail(encoder: PromptEncoder) -> None:
    tokens_used, limit = encoder.count_tokens(LONG_PROMPT)
    assert 150 < tokens_used <= 225 and limit == 225
    embedding = encoder.encode(LONG_PROMPT)
    assert embedding.embeds.shape == (1, 231, 32)
    head = encoder.encode(" ".join(LONG_PROMPT.split()[:20]))
    assert not torch.equal(embedding.embeds[:, :77], head.embeds)


def test_150_tokens_give_154_rows_and_differ_from_first_75(encoder: PromptEncoder, tiny_pipeline) -> None:
    words = [f"word{index}" for index in range(200)]
    ids = tiny_pipeline.tokenizer(" ".join(words), add_special_tokens=False)["input_ids"]
    text = tiny_pipeline.tokenizer.decode(ids[:140])  # 140 tokens, no commas: two chunks
    assert len(tiny_pipeline.tokenizer(text, add_special_tokens=False)["input_ids"]) == 140
    embedding = encoder.encode(text)
    assert embedding.embeds.shape == (1, 154, 32)
    first_75 = encoder.encode(tiny_pipeline.tokenizer.decode(ids[:75]))
    assert first_75.embeds.shape == (1, 77, 32)
    torch.testing.assert_close(embedding.embeds[:, :77], first_75.embeds)  # the first chunk is the same...
    assert not torch.equal(embedding.embeds[:, 77:], encoder.encode("").embeds)  # ...and the tail is real


def test_token_counter_follows_a1111(encoder: PromptEncoder) -> None:
    assert encoder.count_tokens("") == (0, 75)
    assert encoder.count_tokens("a (cat:1.3) <lora:x:1>") == (2, 75)
    assert encoder.count_tokens("a [cat:very fluffy white cat:3] AND dog") == (5, 75)  # longest scheduled text
    assert encoder.count_tokens("a BREAK b") == (76, 150)  # A1111 counts a closed chunk as 75


def test_weight_one_is_exactly_plain(encoder: PromptEncoder) -> None:
    assert torch.equal(encoder.encode("(word:1.0)").embeds, encoder.encode("word").embeds)
    assert torch.equal(encoder.encode("a (cat:1.0), dog").embeds, encoder.encode("a cat, dog").embeds)


def test_weights_change_embeddings_by_mode(encoder: PromptEncoder) -> None:
    plain = encoder.encode("a cat").embeds
    original = encoder.encode("a (cat:1.5)").embeds
    no_norm = encoder.encode("a (cat:1.5)", emphasis=Emphasis.NO_NORM).embeds
    ignored = encoder.encode("a (cat:1.5)", emphasis=Emphasis.NONE).embeds
    assert not torch.equal(original, plain) and not torch.equal(no_norm, original)
    assert torch.equal(ignored, encoder.encode("a (cat:1.5)", emphasis=Emphasis.NONE).embeds)
    torch.testing.assert_close(original.mean(), plain.mean())  # "Original" restores the chunk mean
    torch.testing.assert_close(no_norm[0, 2], plain[0, 2] * 1.5)  # row 2 = "cat" (row 0 is BOS)


def test_apply_emphasis_original_restores_mean() -> None:
    hidden = torch.randn(2, 77, 8) + 1.0
    multipliers = torch.ones(2, 77)
    multipliers[:, 3] = 2.0
    weighted = apply_emphasis(hidden, multipliers, Emphasis.ORIGINAL)
    torch.testing.assert_close(weighted.mean(dim=(1, 2)), hidden.mean(dim=(1, 2)))


def test_three_chunks_have_231_rows(encoder: PromptEncoder) -> None:
    assert encoder.encode("a BREAK b BREAK c").embeds.shape == (1, 231, 32)


def test_break_starts_a_new_chunk(encoder: PromptEncoder) -> None:
    chunks = encoder.chunk_text("red cat BREAK blue dog")
    assert len(chunks) == 2
    assert encoder.encode("red cat BREAK blue dog").embeds.shape == (1, 154, 32)
    torch.testing.assert_close(
        encoder.encode("red cat BREAK blue dog").embeds[:, 77:], encoder.encode("blue dog").embeds
    )
    assert len(encoder.chunk_text("BREAK")) == 1


def test_chunks_are_bos_75_eos_padded(encoder: PromptEncoder, tiny_pipeline) -> None:
    tokenizer = tiny_pipeline.tokenizer
    chunk = encoder.chunk_text("a cat")[0]
    assert len(chunk.tokens) == 77 and chunk.content_length == 2
    assert chunk.tokens[0] == tokenizer.bos_token_id and chunk.tokens[3] == tokenizer.eos_token_id
    assert set(chunk.tokens[4:]) == {tokenizer.pad_token_id}


def test_comma_backtracking_moves_the_phrase(encoder: PromptEncoder) -> None:
    # 70 single-token words, a comma, then a 10-word phrase: the phrase would be cut at 75 tokens
    text = " ".join(["cat"] * 70) + ", " + " ".join(["dog"] * 10)
    chunks = content_tokens(encoder, text)
    comma = encoder.parts[0].tokenizer.get_vocab()[",</w>"]
    assert len(chunks[0]) == 71 and chunks[0][-1] == comma  # closed right after the comma
    assert len(chunks[1]) == 10  # the whole phrase moved to the next chunk


def test_comma_too_far_back_does_not_move(encoder: PromptEncoder) -> None:
    text = " ".join(["cat"] * 50) + ", " + " ".join(["dog"] * 40)  # comma 25 tokens before the limit
    chunks = content_tokens(encoder, text)
    assert [len(chunk) for chunk in chunks] == [75, 16]


def test_negative_padded_to_same_length(encoder: PromptEncoder) -> None:
    positive = encoder.encode(LONG_PROMPT)
    negative = encoder.encode("blurry")
    aligned = encoder.align([encoder.encode_conditioning(LONG_PROMPT, 20), encoder.encode_conditioning("blurry", 20)])
    padded_positive, padded_negative = (conditioning.at_step(1)[0][0] for conditioning in aligned)
    torch.testing.assert_close(padded_positive.embeds, positive.embeds)
    assert padded_negative.embeds.shape == positive.embeds.shape
    torch.testing.assert_close(padded_negative.embeds[:, :77], negative.embeds)
    torch.testing.assert_close(padded_negative.embeds[:, 77:154], encoder.encode("").embeds)


def test_cache_hit_does_not_run_the_encoder(encoder: PromptEncoder, forward_calls: list[int]) -> None:
    first = encoder.encode("a cached prompt")
    assert forward_calls == [1]
    second = encoder.encode("a cached prompt")
    assert forward_calls == [1] and second is first
    encoder.encode("a cached prompt", clip_skip=2)
    assert forward_calls == [1, 1]  # clip skip is part of the key


def test_cache_is_bounded_lru(tiny_pipeline, forward_calls: list[int]) -> None:
    encoder = PromptEncoder.for_pipeline(tiny_pipeline, model_key="tiny", cache=EncodingCache(max_entries=2))
    for text in ("one", "two", "one", "three", "one", "two"):
        encoder.encode(text)
    assert len(forward_calls) == 4  # "two" was evicted by "three", "one" was kept as recently used
    assert len(encoder.cache.entries) == 2


def test_clip_skip_uses_penultimate_layer_with_final_norm(encoder: PromptEncoder, tiny_pipeline) -> None:
    text_encoder = tiny_pipeline.text_encoder
    ids = torch.tensor([encoder.chunk_text("a cat")[0].tokens])
    with torch.no_grad():
        outputs = text_encoder(ids, output_hidden_states=True)
        expected = text_encoder.final_layer_norm(outputs.hidden_states[-2])
    torch.testing.assert_close(encoder.encode("a cat", clip_skip=2).embeds, expected)
    torch.testing.assert_close(encoder.encode("a cat", clip_skip=1).embeds, outputs.last_hidden_state)
    with pytest.raises(PromptEncodingError, match="Clip skip"):
        encoder.encode("a cat", clip_skip=12)


def test_schedule_switches_embeddings_at_the_right_step(encoder: PromptEncoder) -> None:
    conditioning = encoder.encode_conditioning("a [cat:dog:3]", steps=10)
    assert conditioning.switch_steps() == [3] and not conditioning.is_static
    cat, dog = encoder.encode("a cat").embeds, encoder.encode("a dog").embeds
    # at_step takes A1111's 0-based model call (reconstruct_cond_batch: first entry with step <= end_at_step):
    # calls 0-3 of 10 get "a cat", calls 4-9 "a dog".
    for step in range(10):
        ((embedding, weight),) = conditioning.at_step(step)
        assert weight == 1.0
        assert torch.equal(embedding.embeds, cat if step <= 3 else dog), step


def test_alternation_flips_every_step_after_the_first_two(encoder: PromptEncoder) -> None:
    conditioning = encoder.encode_conditioning("a [cat|dog]", steps=6)
    cat, dog = encoder.encode("a cat").embeds, encoder.encode("a dog").embeds
    # A1111's schedule is [[1, cat], [2, dog], ... [6, dog]]; its 0-based model calls 0 and 1 both take the first
    # entry (step <= 1), so the 6 calls get cat, cat, dog, cat, dog, cat (entry 6 is never reached).
    observed = [conditioning.at_step(step)[0][0].embeds for step in range(6)]
    assert [torch.equal(embeds, cat) for embeds in observed] == [True, True, False, True, False, True]
    assert all(torch.equal(embeds, dog) for embeds in observed[2::2])


def test_and_parts_with_weights_and_alignment(encoder: PromptEncoder) -> None:
    conditioning = encoder.encode_conditioning(f"a cat AND {LONG_PROMPT} :0.7", steps=5)
    assert conditioning.is_composable and [part.weight for part in conditioning.sub_prompts] == [1.0, 0.7]
    negative = encoder.encode_conditioning("ugly AND blurry", steps=5, split_and=False)
    assert len(negative.sub_prompts) == 1
    aligned_positive, aligned_negative = encoder.align([conditioning, negative])
    shapes = {embedding.embeds.shape for embedding, _ in aligned_positive.at_step(1) + aligned_negative.at_step(1)}
    assert shapes == {torch.Size([1, 231, 32])}
    assert [tag for tag in conditioning.plan.extra_networks] == []


def test_textual_inversion_seam_replaces_trigger_tokens(tiny_pipeline) -> None:
    tokenizer = tiny_pipeline.tokenizer
    trigger = tuple(tokenizer("mystyle", add_special_tokens=False)["input_ids"])
    replacement = tuple(tokenizer("a b c", add_special_tokens=False)["input_ids"])
    encoder = PromptEncoder.for_pipeline(tiny_pipeline, "tiny")
    part = encoder.parts[0]
    seam = PromptEncoder([type(part)(part.tokenizer, part.text_encoder, embedding_tokens={trigger: replacement})], "ti")
    assert torch.equal(seam.encode("x mystyle").embeds, encoder.encode("x a b c").embeds)


def test_sdxl_two_encoders_concatenated_with_pooled() -> None:
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    config = {"bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1, "vocab_size": 49408, "num_hidden_layers": 3}
    torch.manual_seed(0)
    encoder_1 = CLIPTextModel(CLIPTextConfig(hidden_size=32, intermediate_size=37, num_attention_heads=4, **config))
    encoder_2 = CLIPTextModelWithProjection(
        CLIPTextConfig(hidden_size=16, intermediate_size=20, num_attention_heads=2, projection_dim=24, **config)
    )
    configs = INSTALL_DIR / "configs" / "sdxl"
    pipeline = SimpleNamespace(
        tokenizer=CLIPTokenizer.from_pretrained(configs / "tokenizer", local_files_only=True),
        text_encoder=encoder_1,
        tokenizer_2=CLIPTokenizer.from_pretrained(configs / "tokenizer_2", local_files_only=True),
        text_encoder_2=encoder_2,
    )
    encoder = PromptEncoder.for_pipeline(pipeline, "xl")
    embedding = encoder.encode(f"{LONG_PROMPT} (cat:1.3)")
    assert embedding.embeds.shape == (1, 231, 48) and embedding.pooled is not None
    assert embedding.pooled.shape == (1, 24)
    first_chunk_ids = torch.tensor([encoder.chunk_text(LONG_PROMPT, part_index=1)[0].tokens])
    with torch.no_grad():
        outputs = encoder_2(first_chunk_ids, output_hidden_states=True)
    torch.testing.assert_close(embedding.pooled, outputs.text_embeds)  # pooled of the first chunk
    cat_ids = torch.tensor([encoder.chunk_text("a cat", part_index=1)[0].tokens])
    with torch.no_grad():
        penultimate = encoder_2(cat_ids, output_hidden_states=True).hidden_states[-2]
    torch.testing.assert_close(encoder.encode("a cat").embeds[..., 32:], penultimate)  # no final norm (diffusers)
