"""Model management in the Models tab: the checkpoint table, unload and reload with time and memory."""

from __future__ import annotations

from pathlib import Path

from modules.application import Application
from modules.cmd_args import build_parser
from modules.models.checkpoint_writer import write_single_file
from modules.tiny_model import write_diffusers
from modules.ui.models_tab import checkpoint_table, loaded_status, reload_checkpoint, unload_checkpoint


def test_table_lists_files_and_folders_with_architecture_hash_and_size(tmp_path: Path, tiny_pipeline) -> None:
    models = tmp_path / "models" / "Stable-diffusion"
    write_diffusers(tiny_pipeline, models / "folder-model")
    write_single_file(tiny_pipeline, models / "file-model.safetensors")
    (models / "broken.safetensors").write_bytes(b'\x08\x00\x00\x00\x00\x00\x00\x00{"a": 1}')
    application = Application.create(build_parser().parse_args(["--data-dir", str(tmp_path)]))
    try:
        rows = {row[0]: row for row in checkpoint_table(application)}
        assert rows["folder-model"][1] == "diffusers"
        assert rows["folder-model"][4] == "custom size (diffusers config)"
        assert rows["file-model"][4] == "sidecar config"
        assert rows["broken"][4].startswith("unsupported:")
        assert rows["file-model"][3] == "(on load)", "nothing is hashed just to list"
        assert rows["file-model"][2].endswith("MiB")  # binary units, named as such
        assert "No checkpoint is loaded" in loaded_status(application)
        application.service.run_task(lambda: application.models.load("file-model"))
        status = loaded_status(application)
        assert "Loaded file-model [" in status and " s; weights " in status and "on cpu" in status
        weights = application.models.current.weights_bytes
        assert weights == sum(
            tensor.numel() * tensor.element_size()
            for module in (tiny_pipeline.unet, tiny_pipeline.vae, tiny_pipeline.text_encoder)
            for tensor in (*module.parameters(), *module.buffers())
        )
        rows = {row[0]: row for row in checkpoint_table(application)}
        assert len(rows["file-model"][3]) == 10, "the hash shows once it was computed at load"
        first = application.models.current
        assert "Loaded file-model" in reload_checkpoint(application)
        assert application.models.current is not first, "reload reads the file again"
        assert "No checkpoint is loaded" in unload_checkpoint(application)
        assert application.models.current is None
    finally:
        application.service.shutdown()
