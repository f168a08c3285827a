"""Extra networks for one job: VAE choice, embeddings used by the prompts, LoRA tags applied around generation.

``Networks.applied(model, prompts, negative_prompts)`` is the one call processing makes; it is a context
manager. Inside it the model carries the LoRA deltas of the prompt's tags; on exit (also through an
exception) the weights are restored exactly. Problems a user should know about (a missing LoRA, keys that
map to nothing, an embedding of the wrong size) become notes, never a failed job.
"""

from __future__ import annotations

import logging
import re
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modules.models.families import LoraLoader
from modules.networks.diffusers_lora import DiffusersLoraUse, loaded_loras
from modules.networks.embeddings import Embedding, EmbeddingError, incompatibility, read_embedding, register_embeddings
from modules.networks.lora import NetworkFile, NetworkFileError, load_network
from modules.networks.patcher import ModuleTarget, NetworkUse, PatchReport, build_module_index, patched_weights
from modules.networks.registry import NetworkEntry, NetworkRegistry
from modules.networks.vae import AUTOMATIC, VaeChoice, VaeError, VaeSwitcher, resolve_vae
from modules.prompts.conditioning import prompt_encoder_of
from modules.prompts.parser import ExtraNetworkTag, extract_extra_networks

logger = logging.getLogger(__name__)

LORA_TAG_KINDS = frozenset({"lora", "lyco"})
NETWORK_FILE_CACHE = 8
UNMAPPED_SHOWN = 5


@dataclass
class AppliedNetworks:
    """What a job's networks did: notes for the user and infotext keys."""

    notes: list[str] = field(default_factory=list)
    infotext: dict[str, str] = field(default_factory=dict)


@dataclass
class _ModelState:
    """Per loaded pipeline: the module index and the embeddings already registered or skipped."""

    index: dict[str, ModuleTarget] | None = None
    embeddings: dict[str, Embedding] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)


def parse_lora_tag(tag: ExtraNetworkTag) -> tuple[float, float, int | None]:
    """A1111's ``<lora:name:te[:unet[:dyn]]>`` and named ``te=``, ``unet=``, ``dyn=``."""
    positional = tag.positional
    te = float(positional[1]) if len(positional) > 1 else 1.0
    te = float(tag.named.get("te", te))
    unet = float(positional[2]) if len(positional) > 2 else te
    unet = float(tag.named.get("unet", unet))
    dyn = int(positional[3]) if len(positional) > 3 else None
    dyn = int(tag.named["dyn"]) if "dyn" in tag.named else dyn
    return te, unet, dyn


def describe_unmapped(name: str, report: PatchReport) -> str | None:
    ignored = report.unmapped.get(name)
    if not ignored:
        return None
    shown = "; ".join(f"{item.key} ({item.reason})" for item in ignored[:UNMAPPED_SHOWN])
    more = f" and {len(ignored) - UNMAPPED_SHOWN} more" if len(ignored) > UNMAPPED_SHOWN else ""
    return f"LoRA {name}: {len(ignored)} keys ignored: {shown}{more}"


def mentions(text: str, name: str) -> bool:
    """``name`` (or its part before the first dot, for ``x.learned_embeds``) as a whole word of ``text``."""
    for candidate in dict.fromkeys((name, name.split(".")[0])):
        if candidate and candidate in text and re.search(rf"(?<![\w-]){re.escape(candidate)}(?![\w-])", text):
            return True
    return False


class Networks:
    """LoRA, embeddings and VAE for jobs; owns the per-model state and a small cache of parsed files."""

    def __init__(self, registry: NetworkRegistry, vae_setting: Callable[[], str], vae_path: Path | None = None) -> None:
        self.registry = registry
        self.vae_setting = vae_setting
        self.vae_path = vae_path
        self.vae_switcher = VaeSwitcher()
        self._states: weakref.WeakKeyDictionary[Any, _ModelState] = weakref.WeakKeyDictionary()
        self._files: OrderedDict[tuple[Path, float], NetworkFile] = OrderedDict()
        self._lock = threading.RLock()

    def refresh(self) -> None:
        self.registry.refresh()

    def _state(self, model: Any) -> _ModelState:
        state = self._states.get(model.pipeline)
        if state is None:
            state = self._states[model.pipeline] = _ModelState()
        return state

    @contextmanager
    def applied(
        self, model: Any, prompts: Sequence[str], negative_prompts: Sequence[str], vae: str | None = None
    ) -> Iterator[AppliedNetworks]:
        """VAE (``vae``, else the setting), embeddings and LoRA tags of one pass; LoRA deltas are removed on exit."""
        with self._lock:
            applied = AppliedNetworks()
            if not model.family.uses_a1111_prompts:
                self._note_unsupported(model, prompts, negative_prompts, applied, vae)
                if model.family.lora_loader is LoraLoader.DIFFUSERS:
                    with self._diffusers_loras(model, prompts, applied):
                        yield applied
                else:
                    yield applied
                return
            self.apply_vae(model, applied, vae)
            self.prepare_embeddings(model, [*prompts, *negative_prompts], applied)
            _, tags = extract_extra_networks(prompts[0] if prompts else "")
            uses = self._lora_uses(tags, applied)
            if not uses:
                yield applied
                return
            state = self._state(model)
            if state.index is None:
                state.index = build_module_index(
                    model.pipeline.unet, [p.text_encoder for p in prompt_encoder_of(model).parts]
                )
            encoder = prompt_encoder_of(model)
            base_key = encoder.model_key
            with patched_weights([use for use, _ in uses], state.index) as report:
                if report.text_encoder_changed:
                    # Encoded prompts are cached per model key: a LoRA'd text encoder gets its own entries.
                    encoder.model_key = (
                        base_key + "|" + ",".join(f"{u.name}:{u.te_multiplier}:{u.dyn}" for u, _ in uses)
                    )
                try:
                    self._report(uses, report, applied)
                    yield applied
                finally:
                    encoder.model_key = base_key

    def _note_unsupported(
        self,
        model: Any,
        prompts: Sequence[str],
        negative_prompts: Sequence[str],
        applied: AppliedNetworks,
        vae: str | None,
    ) -> None:
        """A family outside Easel's SD networks (FLUX.1, SD 3.5, Kandinsky, IF): a chosen VAE file, SD embeddings
        and the extra network tags nothing applies are not applied, and the notes say so. The prompt's LoRA tags of
        a family that diffusers loads LoRA for are applied by ``_diffusers_loras`` instead."""
        name = model.family.display_name
        texts = [*prompts, *negative_prompts]
        if model.family.lora_loader is LoraLoader.DIFFUSERS and prompts:
            texts = [*prompts[1:], *negative_prompts]  # the first prompt's tags apply (as for SD)
            first = extract_extra_networks(prompts[0])[1]
            texts.append(" ".join(f"<{tag.kind}:{tag.name}>" for tag in first if tag.kind not in LORA_TAG_KINDS))
        tags = [tag for text in texts for tag in extract_extra_networks(text)[1]]
        if tags:
            shown = ", ".join(f"<{tag.kind}:{tag.name}>" for tag in tags)
            applied.notes.append(f"{name}: extra network tags are not applied to this family ({shown})")
        choice = vae or self.vae_setting()
        if choice and choice not in (AUTOMATIC, "None"):
            applied.notes.append(f"{name}: VAE {choice} is not applied (SD VAE files do not fit this family)")

    @contextmanager
    def _diffusers_loras(self, model: Any, prompts: Sequence[str], applied: AppliedNetworks) -> Iterator[None]:
        """The first prompt's LoRA tags through the pipeline's own LoRA loader (FLUX.1, SD 3.5, IF), for the pass."""
        _, tags = extract_extra_networks(prompts[0] if prompts else "")
        uses: list[tuple[DiffusersLoraUse, NetworkEntry]] = []
        for tag in tags:
            if tag.kind not in LORA_TAG_KINDS:
                continue
            entry = self.registry.find("lora", tag.name)
            if entry is None:
                applied.notes.append(f"LoRA not found: {tag.name} (looked in {self._lora_dirs_text()})")
                continue
            try:
                te, unet, _ = parse_lora_tag(tag)
            except ValueError as error:
                applied.notes.append(f"LoRA {tag.name} not applied: {error}")
                continue
            uses.append((DiffusersLoraUse(entry.name, entry.path, te, unet), entry))
        denoiser = model.family.denoiser
        with loaded_loras(model.pipeline, [use for use, _ in uses], denoiser) as report:
            applied.notes.extend(report.notes)
            used = [(use, entry) for use, entry in uses if use.name in report.applied]
            hashes = [f"{use.name}: {self.registry.lora_hash(entry)}" for use, entry in used]
            if hashes:
                applied.infotext["Lora hashes"] = ", ".join(hashes)
            yield

    def _report(
        self, uses: list[tuple[NetworkUse, NetworkEntry]], report: PatchReport, applied: AppliedNetworks
    ) -> None:
        hashes = []
        for use, entry in uses:
            note = describe_unmapped(use.name, report)
            if note:
                logger.warning("lora keys ignored name=%s count=%d", use.name, len(report.unmapped[use.name]))
                applied.notes.append(note)
            hashes.append(f"{use.name}: {self.registry.lora_hash(entry)}")
        applied.infotext["Lora hashes"] = ", ".join(hashes)

    def _lora_uses(
        self, tags: Sequence[ExtraNetworkTag], applied: AppliedNetworks
    ) -> list[tuple[NetworkUse, NetworkEntry]]:
        uses: list[tuple[NetworkUse, NetworkEntry]] = []
        for tag in tags:
            if tag.kind not in LORA_TAG_KINDS:
                applied.notes.append(f"Extra network <{tag.kind}:...> is not supported; tag ignored")
                continue
            entry = self.registry.find("lora", tag.name)
            if entry is None:
                applied.notes.append(f"LoRA not found: {tag.name} (looked in {self._lora_dirs_text()})")
                logger.warning("lora not found name=%s", tag.name)
                continue
            try:
                te, unet, dyn = parse_lora_tag(tag)
                network = self.network_file(entry)
            except ValueError as error:  # NetworkFileError and bad numbers in the tag
                applied.notes.append(f"LoRA {tag.name} not applied: {error}")
                continue
            uses.append((NetworkUse(entry.name, network, te, unet, dyn), entry))
        return uses

    def _lora_dirs_text(self) -> str:
        return ", ".join(str(folder) for folder in self.registry.dirs["lora"])

    def network_file(self, entry: NetworkEntry) -> NetworkFile:
        """The parsed file, from a small LRU cache keyed by (path, mtime)."""
        key = (entry.path, entry.mtime)
        found = self._files.get(key)
        if found is None:
            try:
                found = load_network(entry.path)
            except NetworkFileError:
                raise
            except Exception as error:  # unreadable or unsafe file: refused with its reason
                raise NetworkFileError(str(error)) from error
            self._files[key] = found
            while len(self._files) > NETWORK_FILE_CACHE:
                self._files.popitem(last=False)
        self._files.move_to_end(key)
        return found

    def vae_choice(self, model: Any, setting: str | None = None) -> VaeChoice:
        """``--vae-path``, else ``setting`` (a request's), else the SD VAE setting."""
        if self.vae_path is not None:
            return VaeChoice(self.vae_path)
        files = {entry.file_name: entry.path for entry in self.registry.entries("vae")}
        files.update({entry.name: entry.path for entry in self.registry.entries("vae")})
        return resolve_vae(setting or self.vae_setting() or AUTOMATIC, model.info.path, files)

    def use_checkpoint_vae(self, model: Any) -> None:
        """Put the checkpoint's own VAE weights back (before saving the model)."""
        vae = getattr(model.pipeline, "vae", None)
        if vae is not None:
            with self._lock:
                self.vae_switcher.apply(vae, VaeChoice(None))

    def apply_vae(self, model: Any, applied: AppliedNetworks, setting: str | None = None) -> None:
        vae = getattr(model.pipeline, "vae", None)
        if vae is None:
            return
        try:
            choice = self.vae_choice(model, setting)
            self.vae_switcher.apply(vae, choice)
        except VaeError as error:
            applied.notes.append(f"{error}; using the checkpoint's own VAE")
            self.vae_switcher.apply(vae, VaeChoice(None))
            return
        if choice.path is not None:
            sha256 = self.registry.hash_cache.sha256(choice.path, "vae") if self.registry.hash_cache else ""
            if sha256:
                applied.infotext["VAE hash"] = sha256[:10]
            applied.infotext["VAE"] = choice.path.name

    def prepare_embeddings(self, model: Any, texts: Sequence[str], applied: AppliedNetworks) -> None:
        """Register, once per model, the embeddings whose names occur in ``texts`` (lazily, on first use)."""
        lowered = " ".join(texts).lower()
        if not lowered.strip():
            return
        state = self._state(model)
        encoder = prompt_encoder_of(model)
        fresh: list[Embedding] = []
        used: list[tuple[str, NetworkEntry]] = []
        for entry in self.registry.entries("embedding"):
            if not mentions(lowered, entry.name.lower()):
                continue
            if entry.name in state.skipped:
                applied.notes.append(f"Embedding {entry.name} skipped: {state.skipped[entry.name]}")
                continue
            if entry.name not in state.embeddings:
                embedding = self._load_embedding(entry, encoder, state)
                if embedding is None:
                    applied.notes.append(f"Embedding {entry.name} skipped: {state.skipped[entry.name]}")
                    continue
                fresh.append(embedding)
            used.append((entry.name, entry))
        register_embeddings(encoder, fresh)
        if fresh:
            state.index = None  # the input-embedding table was resized
        if used:
            applied.infotext["TI hashes"] = ", ".join(
                f"{name}: {self.registry.file_sha256(entry)[:12]}" for name, entry in used
            )

    def _load_embedding(self, entry: NetworkEntry, encoder: Any, state: _ModelState) -> Embedding | None:
        try:
            embedding = read_embedding(entry.path)
        except (EmbeddingError, ValueError) as error:
            state.skipped[entry.name] = str(error)
            return None
        reason = incompatibility(embedding, encoder)
        if reason is not None:
            state.skipped[entry.name] = reason
            logger.info("embedding skipped name=%s reason=%s", entry.name, reason)
            return None
        state.embeddings[entry.name] = embedding
        return embedding

    def embeddings_status(self, model: Any) -> tuple[dict[str, Embedding], dict[str, str]]:
        """Loaded and skipped embeddings for ``model`` (loads every file; for the API and the UI)."""
        with self._lock:
            names = " ".join(entry.name for entry in self.registry.entries("embedding"))
            self.prepare_embeddings(model, [names], AppliedNetworks())
            state = self._state(model)
            return dict(state.embeddings), dict(state.skipped)


def build_networks(paths: Any, args: Any, hash_cache: Any, vae_setting: Callable[[], str]) -> Networks:
    """The Networks of an application: A1111's folders plus ``--lora-dir``, ``--embeddings-dir``, ``--vae-dir``."""
    lora_dirs = [paths.lora_dir, paths.models_dir / "LyCORIS", *getattr(args, "lora_dir", [])]
    registry = NetworkRegistry(
        lora_dirs=[Path(folder) for folder in lora_dirs],
        embedding_dirs=[paths.embeddings_dir, *map(Path, getattr(args, "embeddings_dir", []))],
        vae_dirs=[paths.vae_dir, *map(Path, getattr(args, "vae_dir", []))],
        hash_cache=hash_cache,
    )
    vae_path = getattr(args, "vae_path", None)
    return Networks(registry, vae_setting, Path(vae_path) if vae_path else None)
