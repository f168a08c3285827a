"""ControlNet preprocessors (the extension's module names, sliders and defaults): the image a unit is given ->
the control map its model reads.

The model-free ones are written here (small OpenCV / numpy functions): none, invert, canny, threshold,
tile_resample, blur_gaussian, shuffle, color (t2ia_color_grid) and scribble_xdog. Each has a processor resolution
(the short side the input is resized to first) and up to two thresholds, with the extension's labels, ranges and
defaults; -1 from the API means "the default".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import cv2
import numpy as np
from PIL import Image

from modules.controlnet.annotators import ANNOTATORS, Annotator, AnnotatorError, AnnotatorRunner
from modules.controlnet.units import ResizeMode

Function = Callable[[np.ndarray, float, float, int], np.ndarray]  # (RGB uint8, threshold a, threshold b, seed)


class PreprocessorError(ValueError):
    """An unknown preprocessor, or one whose weights are absent; the message is for the user."""


@dataclass(frozen=True)
class Slider:
    label: str
    value: float
    minimum: float
    maximum: float
    step: float = 1.0

    def api_json(self) -> dict[str, object]:
        return {"name": self.label, "value": self.value, "min": self.minimum, "max": self.maximum, "step": self.step}


RESOLUTION = Slider("Resolution", 512, 64, 2048)


@dataclass(frozen=True)
class Preprocessor:
    name: str
    function: Function
    resolution: Slider | None = RESOLUTION
    sliders: tuple[Slider, ...] = ()
    label: str = ""
    tags: tuple[str, ...] = field(default_factory=tuple)
    annotator: Annotator | None = None  # a model-based one (controlnet-aux, weights in the annotators folder)

    @property
    def title(self) -> str:
        return self.label or self.name

    def slider_value(self, index: int, given: float) -> float:
        """The API's -1 (or a value of a slider the module lacks) means the slider's default."""
        if index >= len(self.sliders):
            return given
        slider = self.sliders[index]
        return slider.value if given is None or given < 0 else min(max(given, slider.minimum), slider.maximum)

    def details(self) -> dict[str, object]:
        sliders = ([self.resolution] if self.resolution else []) + list(self.sliders)
        return {"model_free": self.annotator is None, "sliders": [slider.api_json() for slider in sliders]}


def rgb(image: np.ndarray) -> np.ndarray:
    """HWC3: grey or RGBA arrays as 3-channel RGB."""
    if image.ndim == 2:
        image = image[:, :, None]
    if image.shape[2] == 1:
        return np.concatenate([image] * 3, axis=2)
    if image.shape[2] == 4:
        color, alpha = image[:, :, :3].astype(np.float32), image[:, :, 3:4].astype(np.float32) / 255.0
        return (color * alpha + 255.0 * (1 - alpha)).clip(0, 255).astype(np.uint8)
    return image


def none(image: np.ndarray, a: float, b: float, seed: int) -> np.ndarray:
    return image


def invert(image: np.ndarray, a: float, b: float, seed: int) -> np.ndarray:
    return 255 - image


def canny(image: np.ndarray, low: float, high: float, seed: int) -> np.ndarray:
    return rgb(cv2.Canny(image, int(low), int(high)))


def threshold(image: np.ndarray, level: float, b: float, seed: int) -> np.ndarray:
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    return rgb(np.where(grey > level, 255, 0).astype(np.uint8))


def tile_resample(image: np.ndarray, rate: float, b: float, seed: int) -> np.ndarray:
    if rate <= 1.0:
        return image
    height, width = image.shape[:2]
    return cv2.resize(image, (int(width / rate), int(height / rate)), interpolation=cv2.INTER_AREA)


def blur_gaussian(image: np.ndarray, sigma: float, b: float, seed: int) -> np.ndarray:
    return cv2.GaussianBlur(image, (0, 0), float(sigma))


def color_grid(image: np.ndarray, a: float, b: float, seed: int) -> np.ndarray:
    """T2I-Adapter's colour grid: 64x downsampled colours, blown back up as blocks."""
    height, width = image.shape[:2]
    small = cv2.resize(image, (max(1, width // 64), max(1, height // 64)), interpolation=cv2.INTER_CUBIC)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_NEAREST)


def scribble_xdog(image: np.ndarray, level: float, b: float, seed: int) -> np.ndarray:
    """Difference of Gaussians thresholded into white strokes on black."""
    first = cv2.GaussianBlur(image.astype(np.float32), (0, 0), 0.5)
    second = cv2.GaussianBlur(image.astype(np.float32), (0, 0), 5.0)
    dog = (255 - np.min(second - first, axis=2)).clip(0, 255).astype(np.uint8)
    result = np.zeros_like(image)
    result[2 * (255 - dog) > level] = 255
    return result


def shuffle(image: np.ndarray, a: float, b: float, seed: int) -> np.ndarray:
    """Content shuffle: the image warped by a smooth random flow field drawn from ``seed``."""
    height, width = image.shape[:2]
    rng = np.random.default_rng(seed)
    flows = []
    for size in (height, width):
        noise = rng.random((height // 64 + 2, width // 64 + 2)).astype(np.float32)
        flows.append(cv2.resize(noise, (width, height), interpolation=cv2.INTER_CUBIC) * size)
    return cv2.remap(image, flows[1], flows[0], interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


PREPROCESSORS: tuple[Preprocessor, ...] = (
    Preprocessor("none", none, resolution=None),
    Preprocessor(
        "invert",
        invert,
        resolution=None,
        label="invert (from white bg & black line)",
        tags=("Canny", "Lineart", "Scribble/Sketch", "MLSD"),
    ),
    Preprocessor(
        "canny",
        canny,
        sliders=(Slider("Low Threshold", 100, 1, 255), Slider("High Threshold", 200, 1, 255)),
        tags=("Canny",),
    ),
    Preprocessor("threshold", threshold, sliders=(Slider("Binarization Threshold", 127, 0, 255),)),
    Preprocessor(
        "tile_resample",
        tile_resample,
        resolution=None,
        sliders=(Slider("Down Sampling Rate", 1.0, 1.0, 8.0, 0.01),),
        tags=("Tile/Blur",),
    ),
    Preprocessor(
        "blur_gaussian", blur_gaussian, sliders=(Slider("Sigma", 9.0, 0.01, 64.0, 0.01),), tags=("Tile/Blur",)
    ),
    Preprocessor("shuffle", shuffle, tags=("Shuffle",)),
    Preprocessor("color", color_grid, label="t2ia_color_grid", tags=("T2I-Adapter",)),
    Preprocessor(
        "scribble_xdog", scribble_xdog, sliders=(Slider("XDoG Threshold", 32, 1, 64),), tags=("Scribble/Sketch",)
    ),
)
PREPROCESSORS += tuple(
    Preprocessor(
        annotator.name,
        none,
        sliders=tuple(Slider(*values) for values in annotator.sliders),
        tags=annotator.tags,
        annotator=annotator,
    )
    for annotator in ANNOTATORS
)
# The extension's control types (tags) in its order, each with the words its models' names contain.
CONTROL_TYPES: dict[str, tuple[str, ...]] = {
    "All": (),
    "Canny": ("canny",),
    "Depth": ("depth",),
    "NormalMap": ("normal",),
    "OpenPose": ("openpose", "pose"),
    "Lineart": ("lineart",),
    "MLSD": ("mlsd",),
    "Scribble/Sketch": ("scribble", "sketch"),
    "SoftEdge": ("softedge", "hed", "pidi"),
    "Segmentation": ("seg",),
    "Shuffle": ("shuffle",),
    "Tile/Blur": ("tile", "blur"),
    "T2I-Adapter": ("t2i", "t2ia", "adapter"),
}


def control_type(name: str, models: list[str]) -> dict[str, object]:
    """The extension's ``/controlnet/control_types`` entry: preprocessors of the type, models whose name matches
    (with "None" first), the default preprocessor and model (a v1.1 model when there is one)."""
    if name == "All":
        return {
            "module_list": [item.title for item in PREPROCESSORS],
            "model_list": ["None", *models],
            "default_option": "none",
            "default_model": "None",
        }
    words = (name.lower(), *CONTROL_TYPES[name])
    matching = [model for model in models if any(word in model.lower() for word in words)]
    tagged = [item for item in PREPROCESSORS if name in item.tags]
    modules = [item.title for item in tagged]
    # the extension ranks "invert" below a type's own preprocessors
    default_option = next((item.title for item in tagged if item.name != "invert"), modules[0] if modules else "none")
    first = matching[0] if matching else "None"
    default_model = next((model for model in matching if "11" in model.split("[")[0]), first)
    return {
        "module_list": ["none", *modules],
        "model_list": ["None", *matching],
        "default_option": default_option,
        "default_model": default_model,
    }


def preprocessor_names() -> list[str]:
    return [item.name for item in PREPROCESSORS]


def find_preprocessor(name: str) -> Preprocessor:
    wanted = (name or "none").strip()
    for item in PREPROCESSORS:
        if wanted in (item.name, item.label):
            return item
    raise PreprocessorError(f"unknown ControlNet preprocessor {name!r} (known: {', '.join(preprocessor_names())})")


def pixel_perfect_resolution(image_size: tuple[int, int], target: tuple[int, int], mode: ResizeMode) -> int:
    """The extension's pixel perfect: the processor resolution at which the map needs no further scaling."""
    width, height = image_size
    target_width, target_height = target
    scale_x, scale_y = target_width / width, target_height / height
    scale = min(scale_x, scale_y) if mode is ResizeMode.OUTER_FIT else max(scale_x, scale_y)
    return round(scale * min(width, height))


def resize_short_side(image: np.ndarray, resolution: int) -> np.ndarray:
    height, width = image.shape[:2]
    scale = resolution / min(height, width)
    if scale == 1:
        return image
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_CUBIC if scale > 1 else cv2.INTER_AREA)


def run_preprocessor(
    name: str,
    image: Image.Image,
    resolution: int = -1,
    threshold_a: float = -1,
    threshold_b: float = -1,
    seed: int = 0,
    annotators: AnnotatorRunner | None = None,
) -> Image.Image:
    """The control map of ``image`` (RGB) by preprocessor ``name``; a resolution below 64 means the default.
    Model-based preprocessors need ``annotators`` (the runner over the annotators folder)."""
    item = find_preprocessor(name)
    array = rgb(np.asarray(image.convert("RGB")))
    size = int(resolution) if resolution and resolution >= 64 else 512
    thresholds = (item.slider_value(0, threshold_a), item.slider_value(1, threshold_b))
    if item.annotator is not None:
        if annotators is None:
            raise PreprocessorError(f"preprocessor {name} needs its weights folder (models/ControlNet/annotators)")
        try:
            return Image.fromarray(rgb(annotators.run(item.annotator, array, size, thresholds)))
        except AnnotatorError as error:
            raise PreprocessorError(str(error)) from error
    if item.resolution is not None:
        array = resize_short_side(array, size)
    result = item.function(array, *thresholds, seed)
    return Image.fromarray(rgb(np.ascontiguousarray(result)))
