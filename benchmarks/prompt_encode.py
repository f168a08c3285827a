"""Prompt encoding cost on the tiny model: a 300-token weighted prompt against a plain 75-token one,
and the share of a whole tiny txt2img (20 steps, 64x64, CFG) spent encoding prompt and negative.

``venv/bin/python -m benchmarks.prompt_encode [--runs 15] [--steps 20] [--threads 1] [--device cpu]``

Encoding is timed without the cache (it is cleared before each run); the parse (attention and
schedules) is included. Prints medians only.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from modules.prompts.conditioning import PromptEncoder
from modules.prompts.parser import parse_prompt_attention
from modules.tiny_model import build_tiny_pipeline

NEGATIVE = "blurry, lowres, (bad anatomy:1.2), [watermark], text"


def build_prompts(tokenizer) -> tuple[str, str]:
    """A plain prompt of exactly 75 tokens and a weighted one of about 300 tokens."""
    words = ["a", "castle", "on", "a", "hill", "at", "sunset", "with", "golden", "light", "and", "tall", "trees"]
    plain = " ".join(words[index % len(words)] for index in range(75))
    weighted_parts = [
        f"({word}:1.{index % 5})" if index % 3 == 0 else (f"[{word}]" if index % 3 == 1 else word)
        for index, word in enumerate(words[index % len(words)] for index in range(280))
    ]
    weighted = ", ".join(" ".join(weighted_parts[start : start + 10]) for start in range(0, 280, 10))
    for text in (plain, weighted):
        count = sum(
            len(tokenizer(str(piece[0]), add_special_tokens=False)["input_ids"])
            for piece in parse_prompt_attention(text)
        )
        print(f"prompt tokens={count} chars={len(text)}")
    return plain, weighted


def interleaved_medians(functions: list[Callable[[], object]], runs: int) -> list[float]:
    """Median seconds of each function, run in turn (A, B, A, B ...) so that load on a shared CPU hits all alike."""
    for function in functions:
        function()  # warm-up
    times: list[list[float]] = [[] for _ in functions]
    for _ in range(runs):
        for index, function in enumerate(functions):
            start = time.perf_counter()
            function()
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            times[index].append(time.perf_counter() - start)
    return [statistics.median(series) for series in times]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.prompt_encode", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is steadiest on a shared CPU)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    pipeline = build_tiny_pipeline().to(args.device)
    encoder = PromptEncoder.for_pipeline(pipeline, model_key="tiny")
    plain, weighted = build_prompts(pipeline.tokenizer)

    def encode_uncached(text: str) -> object:
        encoder.cache.clear()
        return encoder.encode(text)

    plain_s, weighted_s = interleaved_medians(
        [lambda: encode_uncached(plain), lambda: encode_uncached(weighted)], args.runs
    )
    print(f"encode plain 75 tokens: {plain_s * 1000:.2f} ms (median of {args.runs})")
    print(f"encode weighted ~300 tokens: {weighted_s * 1000:.2f} ms, ratio {weighted_s / plain_s:.2f}x")

    def encode_pair() -> tuple:
        """As the diffusers backend does: both prompts' conditioning, aligned to the same chunk count."""
        encoder.cache.clear()
        positive = encoder.encode_conditioning(weighted, args.steps, None)
        negative = encoder.encode_conditioning(NEGATIVE, args.steps, None, split_and=False)
        aligned = encoder.align([positive, negative])
        return aligned[0].at_step(1)[0][0], aligned[1].at_step(1)[0][0]

    positive, negative = encode_pair()

    def generate() -> object:
        return pipeline(
            prompt_embeds=positive.embeds,
            negative_prompt_embeds=negative.embeds,
            num_inference_steps=args.steps,
            height=64,
            width=64,
            guidance_scale=7.0,
            generator=torch.Generator(args.device).manual_seed(0),
            output_type="np",
        )

    encode_s, generate_s = interleaved_medians([encode_pair, generate], max(5, args.runs // 2))
    share = encode_s / (encode_s + generate_s)
    print(f"encode prompt+negative (300 + 20 tokens, padded to 4 chunks): {encode_s * 1000:.2f} ms")
    print(f"tiny txt2img {args.steps} steps 64x64 with prompt_embeds: {generate_s * 1000:.1f} ms")
    print(f"share of generation spent encoding: {share * 100:.1f} %")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
