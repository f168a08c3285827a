"""FLUX.1 single files: Easel's transformer converter equals diffusers' at full width and round-trips a tiny model;
ComfyUI all-in-one and BFL transformer-only files load offline with a config folder (the missing parts from a listed
FLUX.1 diffusers folder), and what cannot load is refused with its reason."""

from __future__ import annotations

import shutil

import pytest
import torch
from diffusers.loaders.single_file_utils import convert_flux_transformer_checkpoint_to_diffusers

from modules.backends.diffusers_backend import DiffusersBackend
from modules.devices import MemoryPolicy
from modules.models.checkpoint_writer import write_config_folder
from modules.models.detection import ModelArchitecture, detect_architecture, read_key_shapes
from modules.models.errors import CheckpointLoadError, UnsupportedModelError
from modules.models.flux_keys import convert_flux_transformer
from modules.models.flux_single_file import load_flux_transformer
from modules.models.hashing import HashCache
from modules.models.inventory import checkpoint_rows
from modules.models.manager import ModelManager
from modules.models.registry import CheckpointRegistry
from modules.models.service import ModelService
from modules.options import Options
from modules.paths import DataPaths
from modules.processing.processing import ProcessingContext, process
from tests.flux_single_file import (
    bfl_transformer,
    save,
    tiny_schnell,
    write_flux_checkpoint,
    write_flux_transformer_file,
)
from tests.helpers import tiny_request

FULL_WIDTH = 3072
FLUX_REQUEST = {"sampler_name": "Euler", "steps": 2, "seed": 3, "cfg_scale": 3.5, "negative_prompt": ""}


def synthetic_bfl(guidance: bool, prefix: str, blocks: int = 2) -> dict[str, torch.Tensor]:
    """A BFL state dict at width 3072 whose tensors are tiny except along the dimension diffusers splits with its
    fixed width (each single block's linear1: 3 x 3072 + 4 x 3072 rows)."""
    generator = torch.Generator().manual_seed(0)

    def tensor(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator)

    names = ["time_in", "vector_in", *(["guidance_in"] if guidance else [])]
    state = {
        f"{name}.{layer}.{kind}": tensor(4, 2)
        for name in names
        for layer in ("in_layer", "out_layer")
        for kind in ("weight", "bias")
    }
    for name in ("txt_in", "img_in", "final_layer.linear"):
        state.update({f"{name}.weight": tensor(4, 2), f"{name}.bias": tensor(4)})
    state.update(
        {"final_layer.adaLN_modulation.1.weight": tensor(6, 2), "final_layer.adaLN_modulation.1.bias": tensor(6)}
    )
    for index in range(blocks):
        block = f"double_blocks.{index}."
        for name in (
            "img_mod.lin",
            "txt_mod.lin",
            "img_mlp.0",
            "img_mlp.2",
            "txt_mlp.0",
            "txt_mlp.2",
            "img_attn.proj",
            "txt_attn.proj",
            "img_attn.qkv",
            "txt_attn.qkv",
        ):
            state.update({f"{block}{name}.weight": tensor(6, 2), f"{block}{name}.bias": tensor(6)})
        for stream in ("img_attn", "txt_attn"):
            for norm in ("query_norm", "key_norm"):
                state[f"{block}{stream}.norm.{norm}.scale"] = tensor(2)
        single = f"single_blocks.{index}."
        rows = 3 * FULL_WIDTH + 4 * FULL_WIDTH
        state.update({f"{single}linear1.weight": tensor(rows, 2), f"{single}linear1.bias": tensor(rows)})
        for name in ("modulation.lin", "linear2"):
            state.update({f"{single}{name}.weight": tensor(6, 2), f"{single}{name}.bias": tensor(6)})
        for norm in ("query_norm", "key_norm"):
            state[f"{single}norm.{norm}.scale"] = tensor(2)
    return {prefix + key: value for key, value in state.items()}


@pytest.mark.parametrize("guidance", [True, False], ids=["dev", "schnell"])
@pytest.mark.parametrize("prefix", ["", "model.diffusion_model."], ids=["bfl", "comfyui"])
def test_converter_equals_diffusers_at_full_width(guidance: bool, prefix: str) -> None:
    checkpoint = synthetic_bfl(guidance, prefix)
    expected = convert_flux_transformer_checkpoint_to_diffusers(dict(checkpoint))
    converted = convert_flux_transformer(dict(checkpoint), inner_dim=FULL_WIDTH)
    assert converted.keys() == expected.keys()
    assert all(torch.equal(converted[key], expected[key]) for key in expected)
    assert ("time_text_embed.guidance_embedder.linear_1.weight" in converted) is guidance
    # the final adaLN projection's halves are swapped (BFL: shift, scale; diffusers: scale, shift)
    original = checkpoint[f"{prefix}final_layer.adaLN_modulation.1.weight"]
    assert torch.equal(converted["norm_out.linear.weight"], torch.cat([original[3:], original[:3]]))
    assert converted["single_transformer_blocks.1.proj_mlp.weight"].shape[0] == 4 * FULL_WIDTH


@pytest.fixture(scope="module")
def flux_pipeline():
    from modules.tiny_model import build_tiny_pipeline

    return build_tiny_pipeline(architecture=ModelArchitecture.FLUX, seed=5)


def transformer_inputs(guidance: bool) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    inputs = {
        "hidden_states": torch.randn(1, 16, 4, generator=generator),
        "encoder_hidden_states": torch.randn(1, 8, 32, generator=generator),
        "pooled_projections": torch.randn(1, 32, generator=generator),
        "timestep": torch.tensor([0.5]),
        "img_ids": torch.randn(16, 3, generator=generator),
        "txt_ids": torch.zeros(8, 3),
    }
    return {**inputs, "guidance": torch.tensor([3.5])} if guidance else inputs


def test_tiny_transformer_round_trips_through_the_bfl_layout(tmp_path, tiny_configs, flux_pipeline) -> None:
    path = write_flux_transformer_file(flux_pipeline, tmp_path / "flux1-dev-tiny.safetensors")
    restored = load_flux_transformer(path, tiny_configs / "flux1-dev", torch.float32)
    original = flux_pipeline.transformer
    assert restored.state_dict().keys() == original.state_dict().keys()
    with torch.no_grad():
        expected = original(**transformer_inputs(True)).sample
        assert torch.equal(restored(**transformer_inputs(True)).sample, expected)


def context_over(tmp_path, configs) -> ProcessingContext:
    paths = DataPaths.create(tmp_path)
    paths.ensure()
    registry = CheckpointRegistry(paths.checkpoint_dirs, HashCache(paths.cache_file))
    manager = ModelManager(registry, MemoryPolicy.cpu(), configs)
    return ProcessingContext(ModelService(manager), DiffusersBackend(), Options(), paths)


def assert_same_weights(expected, loaded, names) -> None:
    for name in names:
        original, restored = getattr(expected, name).state_dict(), getattr(loaded, name).state_dict()
        assert original.keys() == restored.keys(), name
        assert all(torch.equal(original[key], restored[key]) for key in original), name


COMPONENTS = ("transformer", "vae", "text_encoder", "text_encoder_2")


@pytest.mark.parametrize("vae_prefix", ["vae.", "first_stage_model."])
def test_all_in_one_checkpoint_loads_every_weight_from_the_file(tmp_path, tiny_configs, flux_pipeline, vae_prefix):
    context = context_over(tmp_path, tiny_configs)
    path = write_flux_checkpoint(flux_pipeline, context.paths.checkpoints_dir / "flux-aio.safetensors", vae_prefix)
    context.models.registry.refresh()
    assert detect_architecture(read_key_shapes(path)) is ModelArchitecture.FLUX
    assert {row.name: row.architecture for row in checkpoint_rows(context.models.registry)} == {
        "flux-aio": "FLUX.1 dev"
    }
    loaded = context.models.manager.load("flux-aio.safetensors")
    assert loaded.family.key == "flux" and loaded.architecture is ModelArchitecture.FLUX
    assert_same_weights(flux_pipeline, loaded.pipeline, COMPONENTS)
    assert loaded.pipeline.tokenizer_2("a cat").input_ids == flux_pipeline.tokenizer_2("a cat").input_ids
    # diffusers' single-file T5 loader leaves T5 in training mode (dropout on): the loader sets every model to eval
    assert not any(getattr(loaded.pipeline, name).training for name in COMPONENTS)


def test_transformer_only_file_takes_the_rest_from_the_listed_flux_folder(tmp_path, tiny_configs, flux_pipeline):
    from modules.tiny_model import build_tiny_pipeline

    context = context_over(tmp_path, tiny_configs)
    checkpoints = context.paths.checkpoints_dir
    write_flux_transformer_file(flux_pipeline, checkpoints / "flux1-dev.safetensors")
    folder_pipeline = build_tiny_pipeline(architecture=ModelArchitecture.FLUX, seed=9)  # other weights
    folder_pipeline.save_pretrained(checkpoints / "FLUX.1-dev")
    context.models.registry.refresh()
    rows = {row.name: row.architecture for row in checkpoint_rows(context.models.registry)}
    assert rows["flux1-dev"] == "FLUX.1 dev (transformer only: VAE and text encoders from a FLUX.1 diffusers folder)"
    loaded = context.models.manager.load("flux1-dev.safetensors").pipeline
    assert_same_weights(flux_pipeline, loaded, ("transformer",))
    assert_same_weights(folder_pipeline, loaded, ("vae", "text_encoder", "text_encoder_2"))
    result = process(tiny_request(checkpoint="flux1-dev.safetensors", **FLUX_REQUEST), context)
    assert result.images[0].size == (64, 64)


def test_file_with_some_parts_takes_only_the_missing_ones_from_the_folder(tmp_path, tiny_configs, flux_pipeline):
    from modules.tiny_model import build_tiny_pipeline

    context = context_over(tmp_path, tiny_configs)
    checkpoints = context.paths.checkpoints_dir
    write_flux_checkpoint(flux_pipeline, checkpoints / "flux-no-t5.safetensors", encoders=("clip_l",))
    folder_pipeline = build_tiny_pipeline(architecture=ModelArchitecture.FLUX, seed=9)
    folder_pipeline.save_pretrained(checkpoints / "FLUX.1-dev")
    context.models.registry.refresh()
    rows = {row.name: row.architecture for row in checkpoint_rows(context.models.registry)}
    assert rows["flux-no-t5"] == "FLUX.1 dev (T5-XXL text encoder from a FLUX.1 diffusers folder)"
    loaded = context.models.manager.load("flux-no-t5.safetensors").pipeline
    assert_same_weights(flux_pipeline, loaded, ("transformer", "vae", "text_encoder"))
    assert_same_weights(folder_pipeline, loaded, ("text_encoder_2",))


def test_tiny_file_against_the_full_size_config_is_refused_before_unloading(tmp_path, flux_pipeline) -> None:
    from modules.paths import INSTALL_DIR

    context = context_over(tmp_path, INSTALL_DIR / "configs")
    checkpoints = context.paths.checkpoints_dir
    write_flux_checkpoint(flux_pipeline, checkpoints / "flux-aio.safetensors")
    write_config_folder(flux_pipeline, checkpoints / "flux-aio.config")  # the tiny sizes for this one
    write_flux_checkpoint(flux_pipeline, checkpoints / "tiny-no-sidecar.safetensors")
    context.models.registry.refresh()
    current = context.models.manager.load("flux-aio.safetensors")
    with pytest.raises(CheckpointLoadError, match="transformer of width 32, flux1-dev describes width 3072"):
        context.models.manager.load("tiny-no-sidecar.safetensors")
    assert context.models.manager.current is current and context.models.manager.disk_loads == 1


def test_schnell_file_gets_the_schnell_config_and_schedule(tmp_path, tiny_configs, flux_pipeline) -> None:
    schnell = tiny_schnell(flux_pipeline)
    configs = tmp_path / "configs"
    shutil.copytree(tiny_configs / "flux1-dev", configs / "flux1-dev")
    write_config_folder(schnell, configs / "flux1-schnell")
    context = context_over(tmp_path / "data", configs)
    checkpoints = context.paths.checkpoints_dir
    write_flux_transformer_file(schnell, checkpoints / "flux1-schnell.safetensors", prefix="model.diffusion_model.")
    flux_pipeline.save_pretrained(checkpoints / "FLUX.1-dev")  # a dev folder supplies the encoders and the VAE
    context.models.registry.refresh()
    assert checkpoint_rows(context.models.registry)[-1].architecture.startswith("FLUX.1 schnell (transformer only")
    loaded = context.models.manager.load("flux1-schnell.safetensors").pipeline
    assert not loaded.transformer.config.guidance_embeds
    assert loaded.scheduler.config.shift == 1.0 and not loaded.scheduler.config.use_dynamic_shifting
    assert_same_weights(schnell, loaded, ("transformer",))
    with torch.no_grad():
        expected = schnell.transformer(**transformer_inputs(False)).sample
        assert torch.equal(loaded.transformer(**transformer_inputs(False)).sample, expected)


def test_transformer_only_file_without_a_flux_folder_is_refused_before_unloading(tmp_path, tiny_configs, flux_pipeline):
    context = context_over(tmp_path, tiny_configs)
    checkpoints = context.paths.checkpoints_dir
    write_flux_checkpoint(flux_pipeline, checkpoints / "flux-aio.safetensors")
    write_flux_transformer_file(flux_pipeline, checkpoints / "flux1-dev.safetensors")
    context.models.registry.refresh()
    current = context.models.manager.load("flux-aio.safetensors")
    with pytest.raises(
        CheckpointLoadError,
        match=r"without the VAE, CLIP-L text encoder, T5-XXL text encoder.*"
        r"no(ne is listed).*FLUX\.1-dev or FLUX\.1-schnell\) in the Models tab",
    ):
        context.models.manager.load("flux1-dev.safetensors")
    assert context.models.manager.current is current


def test_t5_tokenizer_comes_from_a_listed_folder_or_the_load_is_refused(tmp_path, tiny_configs, flux_pipeline):
    from modules.tiny_model import build_tiny_pipeline

    configs = tmp_path / "configs"
    shutil.copytree(tiny_configs / "flux1-dev", configs / "flux1-dev")
    shutil.rmtree(configs / "flux1-dev" / "tokenizer_2")  # as configs/ ships it: no T5 tokenizer
    context = context_over(tmp_path / "data", configs)
    checkpoints = context.paths.checkpoints_dir
    write_flux_checkpoint(flux_pipeline, checkpoints / "flux-aio.safetensors")
    context.models.registry.refresh()
    with pytest.raises(
        CheckpointLoadError, match=r"needs the T5-XXL tokenizer.*no FLUX\.1 or SD 3\.5 diffusers folder"
    ):
        context.models.manager.load("flux-aio.safetensors")
    sd3 = build_tiny_pipeline(architecture=ModelArchitecture.SD3)
    sd3.save_pretrained(checkpoints / "sd35")  # SD 3.5's tokenizer_3 is the same T5 tokenizer
    context.models.registry.refresh()
    loaded = context.models.manager.load("flux-aio.safetensors").pipeline
    assert loaded.tokenizer_2("a red fox").input_ids == sd3.tokenizer_3("a red fox").input_ids
    assert_same_weights(flux_pipeline, loaded, COMPONENTS)


def test_flux_pickle_file_is_refused(tmp_path, tiny_configs, flux_pipeline) -> None:
    context = context_over(tmp_path, tiny_configs)
    path = context.paths.checkpoints_dir / "flux1-dev.ckpt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({key: value.clone() for key, value in bfl_transformer(flux_pipeline.transformer).items()}, path)
    context.models.registry.refresh()
    with pytest.raises(
        UnsupportedModelError,
        match=r"FLUX\.1 pickle file: Easel loads FLUX\.1 single files from "
        r"\.safetensors only",
    ):
        context.models.manager.load("flux1-dev.ckpt")


def test_wrong_width_names_both_widths(tmp_path, tiny_configs, flux_pipeline) -> None:
    wide = {key: value for key, value in bfl_transformer(flux_pipeline.transformer).items()}
    wide["img_in.weight"] = torch.zeros(64, 4)
    path = save(wide, tmp_path / "wide.safetensors")
    with pytest.raises(CheckpointLoadError, match="width 64, flux1-dev describes width 32"):
        load_flux_transformer(path, tiny_configs / "flux1-dev", torch.float32)


@pytest.mark.parametrize("config_name", ["flux1-dev", "flux1-schnell"])
def test_full_size_flux_configs_build_and_their_layout_picks_them(config_name: str) -> None:
    """configs/ holds the real sizes: the transformer builds (on the meta device, no memory) with FLUX.1's 11.9 B
    parameters, and a file of its BFL layout is detected, given that folder and converts at its width."""
    import json

    from accelerate import init_empty_weights
    from diffusers import FluxTransformer2DModel

    from modules.models.loader import config_name_for
    from modules.paths import INSTALL_DIR
    from tests.flux_single_file import transformer_to_bfl

    folder = INSTALL_DIR / "configs" / config_name
    config = json.loads((folder / "transformer" / "config.json").read_text())
    with init_empty_weights():
        transformer = FluxTransformer2DModel.from_config(config)
    assert 11.8e9 < sum(parameter.numel() for parameter in transformer.parameters()) < 12.0e9
    state = transformer.state_dict()
    bfl = transformer_to_bfl(state, config["num_layers"], config["num_single_layers"])
    shapes = {key: tuple(value.shape) for key, value in bfl.items()}
    assert detect_architecture(shapes) is ModelArchitecture.FLUX
    assert config_name_for(ModelArchitecture.FLUX, shapes) == config_name
    converted = convert_flux_transformer(bfl)  # the width read from the file: 3072
    assert {key: value.shape for key, value in converted.items()} == {key: value.shape for key, value in state.items()}
    assert json.loads((folder / "model_index.json").read_text())["_class_name"] == "FluxPipeline"


def test_full_size_flux_components_match_the_family_parameter_counts() -> None:
    """configs/flux1-dev's VAE and text encoders build (meta device) at FLUX.1's sizes: the family's memory figures
    (README) come from these counts."""
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    from modules.models.families import family
    from modules.paths import INSTALL_DIR

    folder = INSTALL_DIR / "configs" / "flux1-dev"
    with init_empty_weights():
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(folder / "vae"))
        clip = CLIPTextModel(CLIPTextConfig.from_pretrained(folder / "text_encoder"))
        t5 = T5EncoderModel(T5Config.from_pretrained(folder / "text_encoder_2"))

    def billions(model: torch.nn.Module) -> float:
        return sum(parameter.numel() for parameter in model.parameters()) / 1e9

    expected = family("flux").parameters
    assert billions(vae) == pytest.approx(expected["vae"], rel=0.02)
    shared = t5.shared.weight.numel() / 1e9  # the encoder's token embedding is the shared one, untied on meta
    assert billions(clip) + billions(t5) - shared == pytest.approx(expected["text encoders"], rel=0.02)
    assert vae.config.latent_channels == 16 and vae.config.scaling_factor == family("flux").vae_scale
