"""Live preview methods (A1111's show_progress_type): Approx cheap, Approx NN, TAESD, Full."""

from __future__ import annotations

import pytest
import torch
from diffusers import AutoencoderTiny

from modules.backends.previews import ApproxDecoder, PreviewMethod, PreviewModels, render_preview
from modules.processing.job import JobControl
from modules.processing.processing import process
from tests.helpers import tiny_request


def tiny_taesd(folder) -> None:
    torch.manual_seed(0)
    AutoencoderTiny(
        encoder_block_out_channels=(8, 8, 8, 8),
        decoder_block_out_channels=(8, 8, 8, 8),
        num_encoder_blocks=(1, 1, 1, 1),
        num_decoder_blocks=(1, 1, 1, 1),
    ).save_pretrained(folder)


@pytest.fixture
def approx_dir(tmp_path):
    folder = tmp_path / "VAE-approx"
    tiny_taesd(folder / "taesd")
    torch.save(ApproxDecoder().state_dict(), folder / "model.pt")
    return folder


def latents(height: int = 8, width: int = 12) -> torch.Tensor:
    return torch.randn(2, 4, height, width, generator=torch.Generator().manual_seed(0))


def test_each_method_decodes_to_its_own_size(approx_dir, tiny_pipeline):
    models = PreviewModels(approx_dir, download=False)
    sample = latents()
    assert render_preview(PreviewMethod.APPROX_CHEAP, sample, False).size == (12, 8)
    assert render_preview(PreviewMethod.APPROX_NN, sample, False, models=models).size == (24, 16)
    assert render_preview(PreviewMethod.TAESD, sample, False, models=models).size == (96, 64)
    assert render_preview(PreviewMethod.FULL, sample, False, pipeline=tiny_pipeline).size == (96, 64)


def test_taesd_preview_is_the_tiny_autoencoders_decode(approx_dir):
    models = PreviewModels(approx_dir, download=False)
    sample = latents()
    image = render_preview(PreviewMethod.TAESD, sample, False, models=models)
    with torch.no_grad():
        expected = models.taesd(False).decode(sample[:1]).sample
    first = torch.tensor(image.getpixel((0, 0)), dtype=torch.float32)
    reference = ((expected[0, :, 0, 0].clamp(-1, 1) + 1) * 127.5).round()
    assert torch.equal(first, reference)


def test_missing_weights_fall_back_to_approx_cheap_with_a_message(tmp_path, caplog):
    models = PreviewModels(tmp_path / "VAE-approx")  # offline in tests: the download fails and says so
    with caplog.at_level("WARNING"):
        taesd = render_preview(PreviewMethod.TAESD, latents(), False, models=models)
        approx = render_preview(PreviewMethod.APPROX_NN, latents(), False, models=models)
    assert taesd.size == approx.size == (12, 8)
    assert "TAESD weights missing" in caplog.text and "Approx NN weights missing" in caplog.text
    assert "TAESD download failed" in caplog.text


class PreviewRecorder(JobControl):
    def __init__(self, **fields) -> None:
        super().__init__(**fields)
        self.previews = []

    def step_done(self, step, preview=None) -> None:
        super().step_done(step, preview)
        if preview is not None:
            self.previews.append(preview)


def test_generation_uses_the_chosen_preview_method(context, tmp_path):
    tiny_taesd(tmp_path / "taesd")
    control = PreviewRecorder(preview_every_n_steps=1, preview_method="TAESD", preview_dir=tmp_path)
    process(tiny_request(steps=3), context, control)
    assert [preview.size for preview in control.previews] == [(64, 64), (64, 64)]
