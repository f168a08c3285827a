"""Where Easel reads and writes files: one immutable object built from the flags."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

INSTALL_DIR = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class DataPaths:
    """Folders and files under ``--data-dir`` (A1111 layout)."""

    data_dir: Path
    models_dir: Path
    extra_ckpt_dirs: tuple[Path, ...] = ()
    configs_dir: Path = INSTALL_DIR / "configs"
    styles_path: Path | None = None  # --styles-file; None: DATA_DIR/styles.csv
    builtin_extensions_dir: Path = INSTALL_DIR / "extensions-builtin"

    @classmethod
    def create(
        cls,
        data_dir: Path | str | None = None,
        models_dir: Path | str | None = None,
        extra_ckpt_dirs: tuple[Path, ...] = (),
        styles_file: Path | str | None = None,
    ) -> DataPaths:
        data = Path(data_dir).resolve() if data_dir else INSTALL_DIR
        models = Path(models_dir).resolve() if models_dir else data / "models"
        styles = Path(styles_file).resolve() if styles_file else None
        return cls(data_dir=data, models_dir=models, extra_ckpt_dirs=tuple(extra_ckpt_dirs), styles_path=styles)

    @property
    def checkpoints_dir(self) -> Path:
        return self.models_dir / "Stable-diffusion"

    @property
    def diffusers_dir(self) -> Path:
        """A huggingface_hub cache of downloaded diffusers pipelines (models--org--name/snapshots/...)."""
        return self.models_dir / "Diffusers"

    @property
    def checkpoint_dirs(self) -> tuple[Path, ...]:
        return (self.checkpoints_dir, self.diffusers_dir, *self.extra_ckpt_dirs)

    @property
    def lora_dir(self) -> Path:
        return self.models_dir / "Lora"

    @property
    def vae_approx_dir(self) -> Path:
        """Live preview decoders (A1111's place): TAESD folders and the Approx NN files."""
        return self.models_dir / "VAE-approx"

    @property
    def controlnet_dir(self) -> Path:
        """ControlNet models (the extension's place); preprocessor weights in its ``annotators`` folder."""
        return self.models_dir / "ControlNet"

    @property
    def clip_vision_dir(self) -> Path:
        """CLIP vision encoders (transformers folders) for IP-Adapter units."""
        return self.models_dir / "clip_vision"

    @property
    def vae_dir(self) -> Path:
        return self.models_dir / "VAE"

    @property
    def embeddings_dir(self) -> Path:
        return self.data_dir / "embeddings"

    @property
    def outputs_dir(self) -> Path:
        return self.data_dir / "outputs"

    @property
    def config_file(self) -> Path:
        return self.data_dir / "config.json"

    @property
    def ui_config_file(self) -> Path:
        return self.data_dir / "ui-config.json"

    @property
    def extensions_dir(self) -> Path:
        """User extensions (A1111's place: ``DATA_DIR/extensions``)."""
        return self.data_dir / "extensions"

    @property
    def cache_file(self) -> Path:
        return self.data_dir / "cache.json"

    @property
    def styles_file(self) -> Path:
        return self.styles_path or self.data_dir / "styles.csv"

    @property
    def params_file(self) -> Path:
        return self.data_dir / "params.txt"

    @property
    def queue_file(self) -> Path:
        """The SQLite database of the job queue and the image history."""
        return self.data_dir / "queue.db"

    @property
    def javascript_dir(self) -> Path:
        """Easel's own browser helpers, served inline with the page."""
        return INSTALL_DIR / "javascript"

    @property
    def localizations_dirs(self) -> tuple[Path, ...]:
        """Easel's localizations/*.json, then the data folder's (A1111 format: English text -> translation)."""
        return tuple(dict.fromkeys((INSTALL_DIR / "localizations", self.data_dir / "localizations")))

    def ensure(self) -> None:
        """Create the folders a fresh install needs."""
        folders = (self.checkpoints_dir, self.lora_dir, self.vae_dir, self.controlnet_dir, self.embeddings_dir)
        for folder in (*folders, self.outputs_dir):
            folder.mkdir(parents=True, exist_ok=True)
