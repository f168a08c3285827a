"""A1111's ``modules.scripts``: the ``Script`` base class extensions subclass, ``AlwaysVisible``, ``basedir()``,
``PostprocessImageArgs`` and friends. Easel wraps each subclass in ``modules.compat.adapter.A1111Script``."""

from __future__ import annotations

import dataclasses
from typing import Any

from PIL import Image

from modules.compat.runtime import runtime
from modules.paths import INSTALL_DIR

AlwaysVisible = object()


@dataclasses.dataclass
class PostprocessImageArgs:
    image: Image.Image


@dataclasses.dataclass
class PostprocessBatchListArgs:
    images: list[Image.Image]


@dataclasses.dataclass
class OnComponent:
    component: Any


class Script:
    """A1111's script base class (attributes and hooks with A1111's signatures; the defaults do nothing)."""

    name: str | None = None
    section: str | None = None
    filename: str = ""
    args_from: int | None = None
    args_to: int | None = None
    alwayson = False
    is_txt2img = False
    is_img2img = False
    tabname: str | None = None
    group: Any = None
    create_group = True
    infotext_fields: list[Any] | None = None
    paste_field_names: list[str] | None = None
    api_info: Any = None
    on_before_component_elem_id: list[Any] | None = None
    on_after_component_elem_id: list[Any] | None = None
    setup_for_ui_only = False
    controls: list[Any] | None = None
    sorting_priority = 0

    def title(self) -> str:
        raise NotImplementedError

    def ui(self, is_img2img: bool) -> Any:
        return None

    def show(self, is_img2img: bool) -> Any:
        return True

    def run(self, p: Any, *args: Any) -> Any:
        return None

    def setup(self, p: Any, *args: Any) -> None:
        pass

    def before_process(self, p: Any, *args: Any) -> None:
        pass

    def process(self, p: Any, *args: Any) -> None:
        pass

    def before_process_batch(self, p: Any, *args: Any, **kwargs: Any) -> None:
        pass

    def after_extra_networks_activate(self, p: Any, *args: Any, **kwargs: Any) -> None:
        pass

    def process_before_every_sampling(self, p: Any, *args: Any, **kwargs: Any) -> None:
        pass

    def process_batch(self, p: Any, *args: Any, **kwargs: Any) -> None:
        pass

    def postprocess_batch(self, p: Any, *args: Any, **kwargs: Any) -> None:
        pass

    def postprocess_batch_list(self, p: Any, pp: PostprocessBatchListArgs, *args: Any, **kwargs: Any) -> None:
        pass

    def on_mask_blend(self, p: Any, mba: Any, *args: Any) -> None:
        pass

    def post_sample(self, p: Any, ps: Any, *args: Any) -> None:
        pass

    def postprocess_image(self, p: Any, pp: PostprocessImageArgs, *args: Any) -> None:
        pass

    def postprocess_maskoverlay(self, p: Any, ppmo: Any, *args: Any) -> None:
        pass

    def postprocess_image_after_composite(self, p: Any, pp: PostprocessImageArgs, *args: Any) -> None:
        pass

    def postprocess(self, p: Any, processed: Any, *args: Any) -> None:
        pass

    def before_component(self, component: Any, **kwargs: Any) -> None:
        pass

    def after_component(self, component: Any, **kwargs: Any) -> None:
        pass

    def on_before_component(self, callback: Any, *, elem_id: str) -> None:
        pass

    def on_after_component(self, callback: Any, *, elem_id: str) -> None:
        pass

    def describe(self) -> str:
        return ""

    def elem_id(self, item_id: str) -> str:
        tab = "img2img" if self.is_img2img else "txt2img"
        title = "".join(c if c.isalnum() else "_" for c in self.title().lower())
        return f"script_{tab}_{title}_{item_id}"

    def before_hr(self, p: Any, *args: Any) -> None:
        pass


def basedir() -> str:
    """The folder of the extension whose script is being loaded (A1111), else the installation folder."""
    loading = runtime().loading
    return str(loading) if loading is not None else str(INSTALL_DIR)


scripts_data: list[Any] = []
