"""The PNG Info tab: read an image's infotext and send its parameters to txt2img or img2img."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr
from PIL import Image

from modules.processing.infotext import MAX_INFOTEXT_CHARS, InfotextTooLongError, read_infotext
from modules.ui.messages import status_html


@dataclass
class PngInfoTab:
    image: gr.Image
    infotext: gr.Textbox
    status: gr.HTML
    send_to_txt2img: gr.Button
    send_to_img2img: gr.Button


def read_png_info(image: Image.Image | None) -> tuple[str, str]:
    """(infotext, status html) for an uploaded image."""
    if image is None:
        return "", ""
    text = read_infotext(image)
    if not text:
        return "", status_html("This image has no generation parameters (no infotext).", "note")
    if len(text) > MAX_INFOTEXT_CHARS:
        return "", status_html(f"This image's {InfotextTooLongError(len(text))}.", "error")
    other = {key: value for key, value in image.info.items() if isinstance(value, str) and key != "parameters"}
    extra = "\n".join(f"{key}: {value}" for key, value in other.items())
    return text, status_html(extra) if extra else ""


def create_png_info_tab() -> PngInfoTab:
    with gr.Row(equal_height=False):
        with gr.Column():
            image = gr.Image(
                label="Source",
                type="pil",
                image_mode=None,
                sources=["upload", "clipboard"],
                height=480,
                elem_id="pnginfo_image",
            )
        with gr.Column():
            infotext = gr.Textbox(label="Parameters", lines=8, interactive=False, elem_id="pnginfo_parameters")
            status = gr.HTML(elem_id="pnginfo_status")
            with gr.Row():
                send_to_txt2img = gr.Button("Send to txt2img", elem_id="pnginfo_send_to_txt2img")
                send_to_img2img = gr.Button("Send to img2img", elem_id="pnginfo_send_to_img2img")
    image.change(
        read_png_info, inputs=image, outputs=[infotext, status], show_progress="hidden", api_visibility="private"
    )
    return PngInfoTab(
        image=image, infotext=infotext, status=status, send_to_txt2img=send_to_txt2img, send_to_img2img=send_to_img2img
    )
