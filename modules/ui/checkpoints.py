"""The checkpoint selector of the top bar: list, refresh, switch (through the job queue), and the no-model hint."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from modules.application import Application
from modules.models.errors import ModelError
from modules.models.inventory import is_edit_model
from modules.ui.messages import error_message

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CheckpointSwitch:
    """The outcome of a switch: the title now loaded (or None) and the error, if the switch failed."""

    title: str | None
    error: str = ""


def checkpoint_titles(application: Application) -> list[str]:
    return [info.title for info in application.registry.checkpoints()]


def checkpoint_choices(application: Application) -> list[tuple[str, str]]:
    """The dropdown's (label, value) pairs: the label is A1111's title, which gains "[hash]" once the file is
    hashed; the value is the file's name, which does not change, so a choice stays valid while its title grows."""
    return [(info.title, info.relative_name) for info in application.registry.checkpoints()]


def choice_value(application: Application, title: str | None) -> str | None:
    """The dropdown value (file name) of a title, name or hash; None when it is unknown."""
    if not title:
        return None
    try:
        return application.registry.find(title).relative_name
    except ModelError:
        return None


def checkpoint_state(application: Application) -> str:
    """Changes when a checkpoint appears, goes, gains its hash, or another one is loaded."""
    loaded = application.models.current
    return "\n".join([*checkpoint_titles(application), str(loaded.info.path) if loaded is not None else ""])


def current_title(application: Application) -> str | None:
    """The loaded checkpoint's title, else the one that will load at start; None when there is none."""
    return application.current_title()


def missing_checkpoint_message(application: Application) -> str:
    """Markdown telling what to do when no checkpoint exists; "" when there is one."""
    if application.registry.checkpoints():
        return ""
    folders = ", ".join(f"`{folder}`" for folder in application.paths.checkpoint_dirs)
    return (
        "**No checkpoint found.** Put a Stable Diffusion checkpoint (a `.safetensors` file, or a diffusers "
        f"folder with `model_index.json`) into {folders}, then press Refresh next to the checkpoint list. "
        "Generating is not possible until then; the other tabs work."
    )


def switch_checkpoint(application: Application, title: str | None) -> CheckpointSwitch:
    """Load ``title`` through the job queue (never during a generation) and remember it in config.json.

    A failed load leaves the previous model loaded; the error message is returned, not raised."""
    if not title:
        return CheckpointSwitch(current_title(application), "Choose a checkpoint.")
    models = application.models
    # a repeated event for the choice already loaded (a click can send two) loads nothing again
    if not already_loaded(application, title):
        try:
            loaded = application.service.run_task(lambda: models.load(title), kind="load-checkpoint")
        except Exception as error:  # every failure is reported to the user; the previous model stays loaded
            if not isinstance(error, ModelError):
                logger.exception("checkpoint switch failed title=%s", title)
            return CheckpointSwitch(current_title(application), f"Could not load {title}: {error_message(error)}")
        logger.info("checkpoint switched title=%s seconds=%.2f", title, loaded.load_seconds)
    new_title = current_title(application) or title
    if application.options.sd_model_checkpoint != new_title:
        try:
            application.update_options(sd_model_checkpoint=new_title)
        except OSError as error:
            logger.error("checkpoint setting not saved error=%s", error)
    return CheckpointSwitch(new_title)


def edit_model_chosen(application: Application, title: str | None) -> bool:
    """Whether the chosen checkpoint (else the loaded one) is instruct-pix2pix: the Image CFG Scale slider shows
    then only (A1111 shows it for edit models only). Read from the file's header; nothing is loaded."""
    if not title:
        loaded = application.models.current
        return loaded is not None and loaded.is_pix2pix
    try:
        return is_edit_model(application.registry.find(title))
    except ModelError:
        return False


def already_loaded(application: Application, title: str) -> bool:
    loaded = application.models.current
    if loaded is None:
        return False
    try:
        return application.registry.find(title).path == loaded.info.path
    except ModelError:
        return False
