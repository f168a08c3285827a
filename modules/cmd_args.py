"""Command-line flags (A1111 names). Builds the parser; parsing happens in webui.py only."""

from __future__ import annotations

import argparse
from pathlib import Path

from modules.backends.registry import DEFAULT_BACKEND, backend_names


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="webui.py", description="Easel: a Stable Diffusion web UI on diffusers")
    server = parser.add_argument_group("server")
    server.add_argument("--listen", action="store_true", help="serve on 0.0.0.0 (your LAN) instead of 127.0.0.1")
    server.add_argument("--server-name", default=None, help="host name or address to bind (overrides --listen)")
    server.add_argument("--port", type=int, default=None, help="port (default 7860; 7861 with --nowebui)")
    server.add_argument("--share", action="store_true", help="create a public gradio.live link")
    server.add_argument("--gradio-auth", default=None, help='UI logins "user:pass[,user2:pass2]"')
    server.add_argument("--gradio-auth-path", type=Path, default=None, help="file with logins, one or more per line")
    server.add_argument("--subpath", default=None, help="serve under this URL path (reverse proxies)")
    server.add_argument("--no-gradio-queue", action="store_true", help="accepted for A1111 compatibility (no effect)")

    api = parser.add_argument_group("API")
    api.add_argument("--api", action="store_true", help="serve the A1111-compatible API (/sdapi/v1) beside the UI")
    api.add_argument("--nowebui", action="store_true", help="serve the API only, without the UI (port 7861)")
    api.add_argument("--api-auth", default=None, help='API logins "user:pass[,user2:pass2]" (HTTP Basic)')
    api.add_argument("--api-log", action="store_true", help="log every API request")
    api.add_argument("--admin-user", default=None, help="login name that may interrupt or skip anyone's job")
    api.add_argument("--cors-allow-origins", default=None, help='allowed CORS origins, "http://a,http://b"')
    api.add_argument("--cors-allow-origins-regex", default=None, help="allowed CORS origins as a regular expression")
    api.add_argument("--tls-keyfile", type=Path, default=None, help="TLS private key file (serve https)")
    api.add_argument("--tls-certfile", type=Path, default=None, help="TLS certificate file (serve https)")

    paths = parser.add_argument_group("folders")
    paths.add_argument("--data-dir", type=Path, default=None, help="base folder for models, outputs and settings")
    paths.add_argument("--models-dir", type=Path, default=None, help="models folder (default DATA_DIR/models)")
    paths.add_argument("--ckpt", type=Path, default=None, help="checkpoint to load at start (file or folder)")
    paths.add_argument("--ckpt-dir", type=Path, action="append", default=[], help="extra checkpoint folder")
    paths.add_argument("--lora-dir", type=Path, action="append", default=[], help="extra LoRA folder")
    paths.add_argument("--controlnet-dir", type=Path, action="append", default=[], help="extra ControlNet model folder")
    paths.add_argument("--embeddings-dir", type=Path, action="append", default=[], help="extra embeddings folder")
    paths.add_argument("--vae-dir", type=Path, action="append", default=[], help="extra VAE folder")
    paths.add_argument("--vae-path", type=Path, default=None, help="VAE file to use (overrides the SD VAE setting)")
    paths.add_argument("--styles-file", type=Path, default=None, help="styles file (default DATA_DIR/styles.csv)")
    paths.add_argument(
        "--hide-ui-dir-config",
        action="store_true",
        help="hide server folder inputs (Extras > Batch from Directory) and lock the folder settings "
        "(implied by --listen, --server-name and --share)",
    )
    paths.add_argument(
        "--enable-insecure-dir-access",
        action="store_true",
        help="with --listen: keep server folder inputs and folder settings (still inside the data dir)",
    )
    paths.add_argument(
        "--allow-outside-data-dir",
        action="store_true",
        help="folder settings and folder inputs may be absolute or use '..' (anywhere the server can reach)",
    )

    device = parser.add_argument_group("device and memory")
    device.add_argument(
        "--backend",
        choices=backend_names(),
        default=DEFAULT_BACKEND,
        help="default sampler backend: original (A1111's samplers and noise) or diffusers; "
        "the setting sd_sampling_backend chooses per request",
    )
    device.add_argument("--use-cpu", nargs="+", default=[], help='"all" runs everything on the CPU')
    device.add_argument("--device-id", type=int, default=None, help="CUDA device index")
    device.add_argument(
        "--precision",
        choices=("full", "half", "autocast"),
        default="autocast",
        help="full = float32; half/autocast = float16 on a GPU",
    )
    device.add_argument("--no-half", action="store_true", help="keep the model in float32")
    device.add_argument("--no-half-vae", action="store_true", help="keep the VAE in float32")
    device.add_argument("--medvram", action="store_true", help="model CPU offload + VAE slicing (GPU only)")
    device.add_argument("--lowvram", action="store_true", help="sequential CPU offload + VAE tiling (GPU only)")
    device.add_argument(
        "--opt-channelslast", action="store_true", help="channels_last memory format for the UNet and VAE"
    )
    device.add_argument(
        "--no-t5", action="store_true", help="load SD 3.5 without its optional T5-XXL encoder (about 9 GB less)"
    )
    device.add_argument("--medvram-sdxl", action="store_true", help="--medvram for SDXL models only (GPU only)")
    attention = device.add_mutually_exclusive_group()
    attention.add_argument("--opt-sdp-attention", action="store_true", help="PyTorch SDP attention (default)")
    attention.add_argument("--xformers", action="store_true", help="xformers attention, when installed")
    device.add_argument(
        "--reinstall-xformers", action="store_true", help="webui.sh: install the xformers wheel again (implies it)"
    )
    attention.add_argument("--opt-split-attention", action="store_true", help="sliced attention (less memory)")

    models = parser.add_argument_group("models and downloads")
    models.add_argument(
        "--ckpt-cache", type=int, default=1, metavar="N", help="keep the last N loaded checkpoints in RAM (default 1)"
    )
    models.add_argument(
        "--no-download-sd-model",
        action="store_true",
        help="do not download the default SD 1.5 model at first start when no checkpoint exists",
    )
    cluster = parser.add_argument_group("Ray cluster (optional: pip install -r requirements-ray.txt)")
    cluster.add_argument(
        "--ray-address",
        default=None,
        metavar="ADDRESS",
        help="run generations on the workers of this Ray cluster (host:port of `ray start --head`); "
        "this process keeps the queue, the UI and the API",
    )
    cluster.add_argument(
        "--ray-workers",
        type=int,
        default=None,
        metavar="N",
        help="with --ray-address: N workers, one GPU each when the cluster has GPUs, else one CPU each "
        "(default: one worker per GPU of the cluster)",
    )
    add_extension_flags(parser)
    return parser


def add_extension_flags(parser: argparse.ArgumentParser) -> None:
    """A1111's flags for scripts and extensions."""
    group = parser.add_argument_group("scripts and extensions")
    group.add_argument("--allow-code", action="store_true", help='offer the "Custom code" script (runs typed Python)')
    group.add_argument("--skip-install", action="store_true", help="do not run extensions' install.py")
    group.add_argument("--disable-all-extensions", action="store_true", help="load no extension at all")
    group.add_argument(
        "--disable-extra-extensions", action="store_true", help="load only the built-in extensions (extensions-builtin)"
    )
    group.add_argument(
        "--enable-insecure-extension-access",
        action="store_true",
        help="allow installing extensions from the UI even with --listen or logins",
    )


def parse_auth(value: str | None, path: Path | None = None) -> list[tuple[str, str]]:
    """Parse "u:p,u2:p2" (and lines of a file) into pairs; raises ValueError on a malformed entry."""
    entries: list[str] = []
    if value:
        entries.extend(value.split(","))
    if path is not None:
        for line in path.read_text(encoding="utf-8").splitlines():
            entries.extend(line.split(","))
    pairs = []
    for entry in (item.strip() for item in entries):
        if not entry:
            continue
        user, sep, password = entry.partition(":")
        if not sep or not user:
            raise ValueError(f"login entry must be user:password, got {entry.split(':')[0]!r}...")
        pairs.append((user, password))
    return pairs
