"""Half-precision VAE: diffusers' force_upcast rule for Easel's own encodes/decodes, and A1111's NaN check."""

from __future__ import annotations

import logging

import pytest
import torch

from modules.models.vae_codec import NAN_ADVICE, decode_latents, encode_pixels, needs_upcast
from modules.tiny_model import tiny_vae


def half_vae(force_upcast: bool) -> torch.nn.Module:
    torch.manual_seed(0)
    vae = tiny_vae()
    vae.register_to_config(force_upcast=force_upcast)
    return vae.to(dtype=torch.float16).eval()


def overflowing(vae: torch.nn.Module) -> torch.nn.Module:
    """Weights whose activations exceed float16's range (65504) in the decoder, and not float32's."""
    with torch.no_grad():
        vae.decoder.conv_in.weight.mul_(4000.0)
        vae.decoder.conv_in.bias.fill_(60000.0)
    return vae


def latents() -> torch.Tensor:
    return torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))


def float32_copy(vae: torch.nn.Module) -> torch.nn.Module:
    copy = tiny_vae()
    copy.load_state_dict({key: value.float() for key, value in vae.state_dict().items()})
    return copy.eval()


def test_force_upcast_decodes_in_float32_and_restores_the_dtype() -> None:
    vae = half_vae(force_upcast=True)
    assert needs_upcast(vae)
    pixels = decode_latents(vae, latents())
    assert pixels.dtype == torch.float32
    assert vae.dtype == torch.float16  # the shared model is given back as it was
    expected = decode_latents(float32_copy(vae), latents())
    assert torch.equal(pixels, expected)


def test_encode_follows_the_same_rule() -> None:
    vae = half_vae(force_upcast=True)
    image = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(2)) * 2 - 1
    assert torch.equal(encode_pixels(vae, image), encode_pixels(float32_copy(vae), image))
    assert vae.dtype == torch.float16


def test_nan_in_half_precision_is_retried_in_float32_and_logged(caplog) -> None:
    vae = overflowing(half_vae(force_upcast=False))
    assert not needs_upcast(vae)
    with torch.inference_mode():
        raw = vae.decode(latents().half() / vae.config.scaling_factor, return_dict=False)[0]
    assert torch.isnan(raw).any()  # the half-precision decode really fails
    with caplog.at_level(logging.WARNING, logger="modules.models.vae_codec"):
        pixels = decode_latents(vae, latents())
    assert not torch.isnan(pixels).any()
    assert NAN_ADVICE in caplog.text and "--no-half-vae" in caplog.text
    assert vae.dtype == torch.float16


@pytest.mark.gpu
def test_half_precision_decode_on_cuda_has_no_nan() -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    vae = overflowing(half_vae(force_upcast=False)).to("cuda")
    pixels = decode_latents(vae, latents().cuda())
    assert pixels.device.type == "cuda" and not torch.isnan(pixels).any()
    upcast = half_vae(force_upcast=True).to("cuda")
    assert not torch.isnan(decode_latents(upcast, latents().cuda())).any()
    assert upcast.dtype == torch.float16


def test_medvram_sdxl_picks_medvram_for_sdxl_models_only() -> None:
    from modules.devices import MemoryPolicy, MemoryPreset
    from modules.models.detection import ModelArchitecture
    from modules.tiny_model import build_tiny_pipeline

    policy = MemoryPolicy(torch.device("cpu"), torch.float32, torch.float32, medvram_sdxl=True)
    assert policy.preset_for(build_tiny_pipeline()) is MemoryPreset.NONE
    for kind in (ModelArchitecture.SDXL, ModelArchitecture.SDXL_REFINER):
        assert policy.preset_for(build_tiny_pipeline(architecture=kind)) is MemoryPreset.MEDVRAM
    plain = MemoryPolicy(torch.device("cpu"), torch.float32, torch.float32)
    assert plain.preset_for(build_tiny_pipeline(architecture=ModelArchitecture.SDXL)) is MemoryPreset.NONE


def test_medvram_sdxl_flag_reaches_the_policy() -> None:
    from modules.application import memory_policy_from_args
    from modules.cmd_args import build_parser

    args = build_parser().parse_args(["--medvram-sdxl"])
    assert memory_policy_from_args(args).medvram_sdxl is True
    assert memory_policy_from_args(build_parser().parse_args([])).medvram_sdxl is False


@torch.inference_mode()
def test_original_backend_decode_upcasts_and_retries_nan(caplog) -> None:
    """The original backend's own decode (A1111's per-image truncating decode) follows the same two rules."""
    from modules.backends.original.images import decode_latents as original_decode
    from modules.backends.original.images import encode_images

    upcast = half_vae(force_upcast=True)
    images = original_decode(upcast, latents())
    assert upcast.dtype == torch.float16
    assert images[0].tobytes() == original_decode(float32_copy(upcast), latents())[0].tobytes()
    encoded = encode_images(upcast, images, [7])
    assert torch.equal(encoded, encode_images(float32_copy(upcast), images, [7]))
    broken = overflowing(half_vae(force_upcast=False))
    with caplog.at_level(logging.WARNING, logger="modules.models.vae_codec"):
        retried = original_decode(broken, latents())
    assert NAN_ADVICE in caplog.text
    assert retried[0].tobytes() == original_decode(float32_copy(broken), latents())[0].tobytes()


def test_full_preview_decodes_through_the_same_rule() -> None:
    from types import SimpleNamespace

    from diffusers.image_processor import VaeImageProcessor

    from modules.backends.previews import PreviewMethod, render_preview

    vae = half_vae(force_upcast=True)
    half = SimpleNamespace(vae=vae, image_processor=VaeImageProcessor())
    full = SimpleNamespace(vae=float32_copy(vae), image_processor=VaeImageProcessor())
    preview = render_preview(PreviewMethod.FULL, latents(), False, pipeline=half)
    assert preview.tobytes() == render_preview(PreviewMethod.FULL, latents(), False, pipeline=full).tobytes()
    assert vae.dtype == torch.float16
