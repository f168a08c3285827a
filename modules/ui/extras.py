"""The Extras tab: upscale and restore faces on one image, several uploads, or a folder (A1111's layout)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
from PIL import Image
from pydantic import ValidationError

from modules.application import Application
from modules.postprocess.upscalers import UpscalerNotFoundError, UpscalerUnsupportedError
from modules.processing.extras import (
    NO_UPSCALER,
    RESIZE_BY,
    RESIZE_TO,
    Extras,
    ExtrasError,
    ExtrasRequest,
    ExtrasResult,
    sources_from_folder,
    sources_from_images,
)
from modules.settings_policy import SettingsPolicy, SettingsRefusedError, settings_policy
from modules.ui.messages import error_message, status_html

logger = logging.getLogger(__name__)

SINGLE_IMAGE, BATCH_UPLOADS, BATCH_FOLDER = 0, 1, 2  # A1111's extras_mode
REQUEST_FIELDS = tuple(ExtrasRequest.model_fields)
USER_ERRORS = (ExtrasError, FileNotFoundError, UpscalerNotFoundError, UpscalerUnsupportedError, SettingsRefusedError)


@dataclass
class ExtrasView:
    """What the tab shows after a run."""

    images: list[Image.Image]
    infotext: str
    status: str


def extras_request_from_values(values: Mapping[str, Any]) -> ExtrasRequest:
    """The request from control values (pydantic takes whole slider floats for int fields)."""
    fields = {name: values[name] for name in REQUEST_FIELDS if values.get(name) is not None}
    return ExtrasRequest(**fields)


def run_extras_job(
    extras: Extras, mode: int, values: Mapping[str, Any], folders: SettingsPolicy | None = None
) -> ExtrasView:
    """Run Extras for the chosen input mode; every failure becomes a message (the server keeps serving).

    ``folders`` decides which server folders Batch from Directory may read and write (default: inside the data
    dir)."""
    try:
        result = run_for_mode(extras, mode, values, folders or SettingsPolicy(data_dir=extras.data_dir))
    except ValidationError as error:
        return ExtrasView([], "", status_html(error_message(error), "error"))
    except USER_ERRORS as error:
        return ExtrasView([], "", status_html(str(error), "error"))
    except Exception as error:  # the UI boundary
        logger.exception("extras failed mode=%s", mode)
        return ExtrasView([], "", status_html(error_message(error), "error"))
    return ExtrasView(result.images, last_parameters(result), status_html(*summary(result)))


def run_for_mode(extras: Extras, mode: int, values: Mapping[str, Any], folders: SettingsPolicy) -> ExtrasResult:
    request = extras_request_from_values(values)
    if mode == BATCH_FOLDER:
        input_dir = str(values.get("input_dir") or "").strip()
        if not input_dir:
            raise ExtrasError("Enter the input directory (the folder that holds the images).")
        input_folder = folders.user_folder(input_dir)
        output_dir = str(values.get("output_dir") or "").strip()
        output_folder = folders.user_folder(output_dir) if output_dir else None
        return extras.run(
            request,
            sources_from_folder(input_folder),
            output_dir=output_folder,
            keep_images=bool(values.get("show_extras_results", True)),
        )
    if mode == BATCH_UPLOADS:
        files = values.get("image_batch") or []
        if not files:
            raise ExtrasError("Upload the images to process (Batch Process).")
        return extras.run(request, sources_from_images(uploaded_paths(files)))
    image = values.get("image")
    if image is None:
        raise ExtrasError("Upload an image to process (Single Image).")
    return extras.run(request, sources_from_images([image]))


def uploaded_paths(files: Sequence[Any]) -> list[Path]:
    """gr.File gives paths (or objects with a ``name``), keeping the uploaded file names."""
    return [Path(getattr(item, "name", item)) for item in files]


def last_parameters(result: ExtrasResult) -> str:
    return result.outputs[-1].postprocessing if result.outputs else ""


def summary(result: ExtrasResult) -> tuple[str, str]:
    """(text, kind) for the status line: what was saved where, skipped files, conversions."""
    count = len(result.outputs)
    folders = sorted({str(path.parent) for path in result.saved_paths})
    lines = [f"{count} image{'s' if count != 1 else ''} done" + (f", saved in {', '.join(folders)}" if folders else "")]
    lines += [f"Skipped {item}" for item in result.skipped]
    lines += [f"Note: {note}" for output in result.outputs for note in output.notes]
    return "\n".join(lines), "note" if len(lines) > 1 or count == 0 else "info"


def upscaler_names(application: Application, refresh: bool = False) -> list[str]:
    registry = application.postprocessor.upscalers
    if refresh:
        registry.refresh()
    return [info.name for info in registry.upscalers() if info.supported]


# --- layout ------------------------------------------------------------------------------------------------------


def build_inputs(components: dict[str, Any], mode: gr.State, folders_shown: bool = True) -> gr.Tabs:
    with gr.Tabs(elem_id="mode_extras") as tabs:
        with gr.Tab("Single Image", id="extras_single_tab", elem_id="extras_single_tab") as single:
            components["image"] = gr.Image(
                label="Source", type="pil", image_mode=None, sources=["upload", "clipboard"], elem_id="extras_image"
            )
        with gr.Tab("Batch Process", id="extras_batch_process_tab", elem_id="extras_batch_process_tab") as batch:
            components["image_batch"] = gr.File(
                label="Batch Process", file_count="multiple", file_types=["image"], elem_id="extras_image_batch"
            )
        with gr.Tab(
            "Batch from Directory",
            id="extras_batch_directory_tab",
            elem_id="extras_batch_directory_tab",
            visible=folders_shown,
        ) as folder:
            components["input_dir"] = gr.Textbox(label="Input directory", elem_id="extras_batch_input_dir")
            components["output_dir"] = gr.Textbox(
                label="Output directory",
                placeholder="Leave blank to save images to the default path.",
                elem_id="extras_batch_output_dir",
            )
            components["show_extras_results"] = gr.Checkbox(
                label="Show result images", value=True, elem_id="extras_show_extras_results"
            )
    for tab, number in ((single, SINGLE_IMAGE), (batch, BATCH_UPLOADS), (folder, BATCH_FOLDER)):
        tab.select(lambda number=number: number, outputs=mode, show_progress="hidden", queue=False)
    return tabs


def build_upscale_controls(application: Application, components: dict[str, Any], resize_mode: gr.State) -> None:
    names = upscaler_names(application)
    with gr.Tabs(elem_id="extras_resize_mode"):
        with gr.Tab("Scale by", elem_id="extras_scale_by_tab") as scale_by, gr.Row():
            components["upscaling_resize"] = gr.Slider(
                1.0, 8.0, value=4, step=0.05, label="Resize", elem_id="extras_upscaling_resize", scale=4
            )
            components["max_side_length"] = gr.Number(
                value=0, label="Max side length", precision=0, minimum=0, elem_id="extras_upscale_max_side_length"
            )
        with gr.Tab("Scale to", elem_id="extras_scale_to_tab") as scale_to, gr.Row():
            components["upscaling_resize_w"] = gr.Slider(
                64, 8192, value=512, step=8, label="Width", elem_id="extras_upscaling_resize_w"
            )
            components["upscaling_resize_h"] = gr.Slider(
                64, 8192, value=512, step=8, label="Height", elem_id="extras_upscaling_resize_h"
            )
            components["upscaling_crop"] = gr.Checkbox(value=True, label="Crop to fit", elem_id="extras_upscaling_crop")
    scale_by.select(lambda: RESIZE_BY, outputs=resize_mode, show_progress="hidden", queue=False)
    scale_to.select(lambda: RESIZE_TO, outputs=resize_mode, show_progress="hidden", queue=False)
    components["extras_upscaler_1"] = gr.Dropdown(
        names, value=NO_UPSCALER, label="Upscaler 1", elem_id="extras_upscaler_1"
    )
    with gr.Row():
        components["extras_upscaler_2"] = gr.Dropdown(
            names, value=NO_UPSCALER, label="Upscaler 2", elem_id="extras_upscaler_2"
        )
        components["extras_upscaler_2_visibility"] = gr.Slider(
            0.0, 1.0, value=0.0, step=0.001, label="Upscaler 2 visibility", elem_id="extras_upscaler_2_visibility"
        )
    for name in ("extras_upscaler_1", "extras_upscaler_2"):
        dropdown = components[name]
        dropdown.focus(
            lambda current: gr.update(choices=upscaler_names(application, refresh=True), value=current),
            inputs=dropdown,
            outputs=dropdown,
            show_progress="hidden",
            queue=False,
        )


def build_face_controls(components: dict[str, Any]) -> None:
    components["gfpgan_visibility"] = gr.Slider(
        0.0, 1.0, value=0.0, step=0.001, label="GFPGAN visibility", elem_id="extras_gfpgan_visibility"
    )
    with gr.Row():
        components["codeformer_visibility"] = gr.Slider(
            0.0, 1.0, value=0.0, step=0.001, label="CodeFormer visibility", elem_id="extras_codeformer_visibility"
        )
        components["codeformer_weight"] = gr.Slider(
            0.0,
            1.0,
            value=0.0,
            step=0.001,
            label="CodeFormer weight (0 = maximum effect, 1 = minimum effect)",
            elem_id="extras_codeformer_weight",
        )


@dataclass
class ExtrasTab:
    generate: gr.Button
    gallery: gr.Gallery
    infotext: gr.Textbox
    status: gr.HTML
    image: gr.Image  # Single Image's source ("Send to extras" puts the image here)
    modes: gr.Tabs
    mode: gr.State

    def receive(self, image: Image.Image) -> dict[Any, Any]:
        """The updates that show ``image`` in Single Image, that mode chosen."""
        return {self.image: image, self.modes: gr.Tabs(selected="extras_single_tab"), self.mode: SINGLE_IMAGE}

    def receivers(self) -> list[Any]:
        return [self.image, self.modes, self.mode]


def create_extras_tab(application: Application) -> ExtrasTab:
    extras = application.extras()
    folders = settings_policy(application)
    components: dict[str, Any] = {}
    mode, resize_mode = gr.State(SINGLE_IMAGE), gr.State(RESIZE_BY)
    with gr.Row(equal_height=False):
        with gr.Column(scale=1):
            modes = build_inputs(components, mode, folders_shown=not folders.folders_locked)
            generate = gr.Button("Generate", variant="primary", elem_id="extras_generate", size="lg")
            with gr.Accordion("Upscale", open=True, elem_id="extras_upscale"):
                build_upscale_controls(application, components, resize_mode)
            with gr.Accordion("Restore faces", open=True, elem_id="extras_restore_faces"):
                build_face_controls(components)
        with gr.Column(scale=1):
            gallery = gr.Gallery(
                label="Result",
                show_label=False,
                elem_id="extras_gallery",
                columns=3,
                height=420,
                format="png",
                type="pil",
                interactive=False,
                object_fit="contain",
                preview=True,
            )
            status = gr.HTML(elem_id="extras_status")
            infotext = gr.Textbox(label="Extras parameters", lines=2, interactive=False, elem_id="extras_infotext")
    names = list(components)

    def run(mode_value: int, resize_value: int, *values: Any) -> tuple[list[Image.Image], str, str]:
        view = run_extras_job(
            extras, mode_value, {**dict(zip(names, values, strict=True)), "resize_mode": resize_value}, folders
        )
        return view.images, view.infotext, view.status

    generate.click(
        run,
        inputs=[mode, resize_mode, *components.values()],
        outputs=[gallery, infotext, status],
        concurrency_limit=1,
        api_visibility="private",
    )
    return ExtrasTab(
        generate=generate,
        gallery=gallery,
        infotext=infotext,
        status=status,
        image=components["image"],
        modes=modes,
        mode=mode,
    )
