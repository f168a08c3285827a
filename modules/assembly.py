"""What runs generations, built from the flags: registry, model service, networks, backends, processing context.

Built once by the application (modules/application.py), and once in each Ray worker (modules/cluster/worker.py),
which runs the same processing core on its own device."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Mapping
from dataclasses import dataclass

from modules.backends.base import Backend
from modules.backends.registry import backend_names, create_backend
from modules.compute import apply_backend_flags
from modules.compute.options import compute_settings_from
from modules.devices import Attention, MemoryPolicy
from modules.models.hashing import HashCache
from modules.models.manager import ModelManager
from modules.models.registry import CheckpointRegistry
from modules.models.service import ModelService
from modules.networks.service import Networks, build_networks
from modules.options import Options
from modules.paths import DataPaths
from modules.postprocess.service import Postprocessor
from modules.processing.processing import ProcessingContext

logger = logging.getLogger(__name__)


def memory_policy_from_args(args: argparse.Namespace) -> MemoryPolicy:
    xformers = args.xformers or getattr(args, "reinstall_xformers", False)
    attention = Attention.XFORMERS if xformers else Attention.SPLIT if args.opt_split_attention else Attention.SDP
    return MemoryPolicy.from_flags(
        use_cpu=args.use_cpu,
        device_id=args.device_id,
        precision=args.precision,
        no_half=args.no_half,
        no_half_vae=args.no_half_vae,
        medvram=args.medvram,
        lowvram=args.lowvram,
        attention=attention,
        medvram_sdxl=args.medvram_sdxl,
    )


@dataclass
class GenerationStack:
    """The objects that generate: one per process that runs jobs."""

    registry: CheckpointRegistry
    policy: MemoryPolicy
    models: ModelService
    networks: Networks
    postprocessor: Postprocessor
    backends: Mapping[str, Backend]
    backend: Backend
    context: ProcessingContext


def build_stack(args: argparse.Namespace, paths: DataPaths, options: Options) -> GenerationStack:
    extra_files: tuple = ()
    if args.ckpt and not args.ckpt.exists():
        logger.error("--ckpt path not found path=%s; starting without it", args.ckpt)
    elif args.ckpt:
        extra_files = (args.ckpt,)
    registry = CheckpointRegistry(paths.checkpoint_dirs, HashCache(paths.cache_file), extra_files=extra_files)
    registry.refresh()
    policy = memory_policy_from_args(args)
    compute = compute_settings_from(options, args)
    apply_backend_flags(compute)
    manager = ModelManager(
        registry,
        policy,
        paths.configs_dir,
        cache_size=getattr(args, "ckpt_cache", 1),
        compute=compute,
        without_t5=getattr(args, "no_t5", False),
    )
    detector = paths.configs_dir / "face-detection" / "yunet.onnx"
    postprocessor = Postprocessor(paths.models_dir, options, detector)
    networks = build_networks(paths, args, HashCache(paths.cache_file), lambda: options.sd_vae)
    models = ModelService(manager, networks)
    # Every backend is built once; they share the loaded weights (a backend holds no model state).
    backends = {name: create_backend(name) for name in backend_names()}
    backend = backends[args.backend]
    context = ProcessingContext(
        models=models,
        backend=backend,
        options=options,
        paths=paths,
        postprocessor=postprocessor,
        backends=backends,
    )
    return GenerationStack(registry, policy, models, networks, postprocessor, backends, backend, context)
