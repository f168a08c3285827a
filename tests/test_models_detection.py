"""Architecture detection on full-size key layouts built on the meta device (no weights, no big files)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import pytest
import torch
from accelerate import init_empty_weights
from diffusers import AutoencoderKL, UNet2DConditionModel
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from modules.models.detection import ModelArchitecture, detect_architecture, read_key_shapes
from modules.models.errors import UnsupportedModelError
from modules.models.ldm_keys import convert_components
from modules.paths import INSTALL_DIR

CONFIGS = INSTALL_DIR / "configs"


@cache
def ldm_shapes(config_name: str) -> dict[str, tuple[int, ...]]:
    """The LDM key -> shape table of a full-size model from configs/<config_name>, built without memory."""
    folder = CONFIGS / config_name
    with init_empty_weights():
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder / "unet"))
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(folder / "vae"))
        text_encoder = None  # the SDXL refiner has none
        if (folder / "text_encoder").is_dir():
            text_encoder = CLIPTextModel(CLIPTextConfig.from_pretrained(folder / "text_encoder"))
        text_encoder_2 = None
        if (folder / "text_encoder_2").is_dir():
            text_encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig.from_pretrained(folder / "text_encoder_2"))
    converted = convert_components(unet, vae, text_encoder, text_encoder_2)
    return {key: tuple(value.shape) for key, value in converted.items()}


@pytest.mark.parametrize(
    ("config_name", "expected"),
    [
        ("sd15", ModelArchitecture.SD1),
        ("sd15-inpainting", ModelArchitecture.SD1_INPAINT),
        ("sd15-pix2pix", ModelArchitecture.SD1_PIX2PIX),
        ("sd2-v", ModelArchitecture.SD2_V),
        ("sd2-inpainting", ModelArchitecture.SD2_INPAINT),
        ("sdxl", ModelArchitecture.SDXL),
        ("sdxl-inpainting", ModelArchitecture.SDXL_INPAINT),
        ("sdxl-refiner", ModelArchitecture.SDXL_REFINER),
    ],
)
def test_full_size_layouts_are_detected(config_name: str, expected: ModelArchitecture) -> None:
    architecture = detect_architecture(ldm_shapes(config_name))
    assert architecture is expected
    assert architecture.config_name == config_name
    assert (CONFIGS / architecture.config_name / "model_index.json").is_file()


def test_sd2_512_layout_reads_as_sd2_until_the_probe() -> None:
    """SD 2.x 512 and 768-v share every key and shape: the layout alone says SD2_V (the loader probes)."""
    assert ldm_shapes("sd2") == ldm_shapes("sd2-v")
    assert detect_architecture(ldm_shapes("sd2")) is ModelArchitecture.SD2_V


def test_refiner_layout_matches_the_published_refiner() -> None:
    """Shapes every sd_xl_refiner_1.0.safetensors has (model_channels 384, adm_in_channels 2560, OpenCLIP-G)."""
    refiner = ldm_shapes("sdxl-refiner")
    assert refiner["model.diffusion_model.label_emb.0.0.weight"] == (1536, 2560)
    assert refiner["model.diffusion_model.input_blocks.0.0.weight"] == (384, 4, 3, 3)
    assert refiner["model.diffusion_model.input_blocks.4.1.transformer_blocks.3.attn2.to_k.weight"] == (768, 1280)
    assert refiner["model.diffusion_model.middle_block.1.transformer_blocks.3.attn1.to_q.weight"] == (1536, 1536)
    assert refiner["conditioner.embedders.0.model.transformer.resblocks.31.attn.in_proj_weight"] == (3840, 1280)
    assert refiner["conditioner.embedders.0.model.text_projection"] == (1280, 1280)
    assert not any(key.startswith("conditioner.embedders.1.") for key in refiner)


def test_converted_layouts_match_the_original_checkpoints_key_names() -> None:
    """Spot checks against names every A1111 checkpoint of that family has."""
    sd15 = ldm_shapes("sd15")
    assert sd15["model.diffusion_model.output_blocks.11.0.skip_connection.weight"] == (320, 640, 1, 1)
    assert sd15["model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"] == (320, 768)
    assert sd15["first_stage_model.encoder.mid.attn_1.q.weight"] == (512, 512, 1, 1)
    assert sd15["model.diffusion_model.output_blocks.2.1.conv.weight"] == (1280, 1280, 3, 3)
    assert sd15["model.diffusion_model.input_blocks.3.0.op.weight"] == (320, 320, 3, 3)
    sdxl = ldm_shapes("sdxl")
    assert sdxl["conditioner.embedders.1.model.transformer.resblocks.9.mlp.c_proj.bias"] == (1280,)
    assert sdxl["conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight"] == (3840, 1280)
    assert sdxl["conditioner.embedders.1.model.text_projection"] == (1280, 1280)
    assert sdxl["model.diffusion_model.label_emb.0.0.weight"] == (1280, 2816)
    assert sdxl["model.diffusion_model.output_blocks.2.2.conv.weight"] == (1280, 1280, 3, 3)
    sd2 = ldm_shapes("sd2-v")
    assert sd2["cond_stage_model.model.token_embedding.weight"] == (49408, 1024)


def test_shapes_come_from_the_safetensors_header(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    save_file({"a.weight": torch.zeros(3, 4, 1, 1), "b": torch.zeros(5)}, path)
    assert read_key_shapes(path) == {"a.weight": (3, 4, 1, 1), "b": (5,)}


@pytest.mark.parametrize("prefix", ["", "model.diffusion_model."], ids=["bfl", "comfyui"])
def test_flux_layout_is_detected_and_its_guidance_picks_dev_or_schnell(prefix: str) -> None:
    from modules.models.loader import config_name_for

    schnell = {
        f"{prefix}double_blocks.0.img_attn.qkv.weight": (9216, 3072),
        f"{prefix}double_blocks.0.img_attn.norm.key_norm.scale": (128,),
        f"{prefix}img_in.weight": (3072, 64),
    }
    dev = {**schnell, f"{prefix}guidance_in.in_layer.weight": (3072, 256)}
    assert detect_architecture(schnell) is detect_architecture(dev) is ModelArchitecture.FLUX
    assert config_name_for(ModelArchitecture.FLUX, dev) == "flux1-dev"
    assert config_name_for(ModelArchitecture.FLUX, schnell) == "flux1-schnell"


def test_sd3_layout_is_unsupported() -> None:
    sd3 = {
        "model.diffusion_model.joint_blocks.0.context_block.adaLN_modulation.1.bias": (9216,),
        "model.diffusion_model.pos_embed": (1, 36864, 1536),
    }
    with pytest.raises(UnsupportedModelError, match="sd3"):
        detect_architecture(sd3)


def test_refiner_from_the_base_layout_is_detected() -> None:
    shapes = {
        key.replace("conditioner.embedders.1.", "conditioner.embedders.0."): shape
        for key, shape in ldm_shapes("sdxl").items()
        if not key.startswith("conditioner.embedders.0.")
    }
    with pytest.raises(UnsupportedModelError, match="SDXL refiner layout with cross-attention width 2048"):
        detect_architecture(shapes)


@pytest.mark.parametrize(("config_name", "channels"), [("sd2-v", 8), ("sdxl", 8), ("sdxl-refiner", 9), ("sd15", 7)])
def test_other_unet_inputs_are_unsupported(config_name: str, channels: int) -> None:
    shapes = dict(ldm_shapes(config_name))
    out_channels, _, height, width = shapes["model.diffusion_model.input_blocks.0.0.weight"]
    shapes["model.diffusion_model.input_blocks.0.0.weight"] = (out_channels, channels, height, width)
    with pytest.raises(UnsupportedModelError):
        detect_architecture(shapes)


def test_non_standard_width_is_unsupported_without_a_sidecar(tiny_pipeline) -> None:
    from modules.models.checkpoint_writer import pipeline_to_ldm

    shapes = {key: tuple(value.shape) for key, value in pipeline_to_ldm(tiny_pipeline).items()}
    with pytest.raises(UnsupportedModelError, match="cross-attention width 32"):
        detect_architecture(shapes)


def test_unet_without_text_encoder_is_unsupported() -> None:
    shapes = {key: shape for key, shape in ldm_shapes("sd15").items() if key.startswith("model.diffusion_model.")}
    with pytest.raises(UnsupportedModelError, match="text encoder"):
        detect_architecture(shapes)
