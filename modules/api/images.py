"""Images in and out of the API: base64 decoding with limits, PNG encoding with infotext, URL policy."""

from __future__ import annotations

import base64
import binascii
import io
import ipaddress
import logging
import socket
import struct
import warnings
import zlib
from dataclasses import dataclass, replace
from urllib.parse import urlsplit

import httpx
from PIL import Image, UnidentifiedImageError

from modules.api.errors import BadInputError, PayloadTooLargeError
from modules.options import Options
from modules.processing.saving import save_options

logger = logging.getLogger(__name__)

URL_FETCH_TIMEOUT_SECONDS = 10.0
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Text a posted PNG may carry in all its tEXt/zTXt/iTXt chunks together, decompressed. Pillow allows 1 MB a chunk
# and 64 MB in all, so a request of a few KB could make the server inflate 64 MB; A1111's infotext is a few KB,
# and other programs' workflows (ComfyUI) some hundred KB.
MAX_PNG_TEXT_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class ImageLimits:
    """What a posted image may be: encoded bytes, pixels, and whether http(s) URLs are fetched."""

    max_bytes: int = 50 * 1024 * 1024
    max_pixels: int = 8192 * 8192
    allow_urls: bool = False


def limits_with_options(limits: ImageLimits, options: Options) -> ImageLimits:
    """The limits for one request: URLs are fetched when the limits allow them or the ``api_enable_requests``
    setting does (read per request, so a change in Settings or POST /options applies at once)."""
    if options.api_enable_requests and not limits.allow_urls:
        return replace(limits, allow_urls=True)
    return limits


def strip_data_uri(text: str) -> str:
    """ "data:image/png;base64,AAAA" -> "AAAA" (A1111 accepts both)."""
    if text.startswith("data:") and "," in text:
        return text.split(",", 1)[1]
    return text


def decode_base64(text: str, limits: ImageLimits, field: str) -> bytes:
    payload = strip_data_uri(text.strip())
    if len(payload) * 3 // 4 > limits.max_bytes:
        raise PayloadTooLargeError(f"{field}: image is larger than {limits.max_bytes} bytes")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as error:
        raise BadInputError(f"{field}: not valid base64 ({error})") from error


def png_text_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """(type, data) of the text chunks of a PNG file, without decompressing anything.

    Written by hand: Pillow decompresses text chunks while it opens a file and has no per-call limit."""
    chunks: list[tuple[bytes, bytes]] = []
    position = len(PNG_SIGNATURE)
    while position + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[position : position + 8])
        body = data[position + 8 : position + 8 + length]
        if kind in (b"tEXt", b"zTXt", b"iTXt"):
            chunks.append((kind, body))
        if kind == b"IEND":
            break
        position += 12 + length  # length, type, data, CRC
    return chunks


def inflated_size(compressed: bytes, limit: int) -> int:
    """The decompressed size of zlib data, counting at most ``limit + 1`` bytes (a damaged stream counts 0)."""
    inflater = zlib.decompressobj()
    try:
        return len(inflater.decompress(compressed, limit + 1))
    except zlib.error:
        return 0


def png_text_size(chunk_type: bytes, body: bytes, limit: int) -> int:
    """The size of one text chunk's text once decompressed (at most ``limit + 1``)."""
    _keyword, _, rest = body.partition(b"\0")
    if chunk_type == b"zTXt":
        return inflated_size(rest[1:], limit)
    if chunk_type == b"iTXt" and rest[:1] == b"\x01":
        _language, _, rest = rest[2:].partition(b"\0")
        _translated, _, text = rest.partition(b"\0")
        return inflated_size(text, limit)
    return len(rest)


def check_png_text(data: bytes, field: str) -> None:
    """Refuse a PNG whose text chunks hold more than MAX_PNG_TEXT_BYTES (before Pillow inflates them)."""
    if not data.startswith(PNG_SIGNATURE):
        return
    left = MAX_PNG_TEXT_BYTES
    for chunk_type, body in png_text_chunks(data):
        left -= png_text_size(chunk_type, body, left)
        if left < 0:
            raise PayloadTooLargeError(
                f"{field}: the PNG's text chunks hold more than {MAX_PNG_TEXT_BYTES} bytes of text"
            )


def open_image(data: bytes, limits: ImageLimits, field: str) -> Image.Image:
    """Open and fully load an image; oversized (decompression bombs included) or non-images are refused."""
    check_png_text(data, field)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            if image.width * image.height > limits.max_pixels:
                raise PayloadTooLargeError(
                    f"{field}: image of {image.width}x{image.height} pixels is over the limit of {limits.max_pixels}"
                )
            if image.width == 0 or image.height == 0:
                raise BadInputError(f"{field}: image has no pixels")
            image.load()
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise BadInputError(f"{field}: not a readable image ({error})") from error
    except (OSError, SyntaxError, ValueError) as error:
        raise BadInputError(f"{field}: damaged or unsupported image ({error})") from error
    return image


def decode_image(text: str, limits: ImageLimits, field: str = "image") -> Image.Image:
    """A base64 image (or an http(s) URL when allowed, never to a local address) -> a loaded PIL image."""
    if not text or not text.strip():
        raise BadInputError(f"{field}: empty image")
    if text.startswith(("http://", "https://")):
        return open_image(fetch_url(text, limits, field), limits, field)
    return open_image(decode_base64(text, limits, field), limits, field)


def is_public_address(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    return ip.is_global and not (ip.is_multicast or ip.is_reserved)


def check_url_allowed(url: str, limits: ImageLimits, field: str) -> None:
    """Refuse URLs unless allowed, and always those that resolve to loopback, private or link-local addresses."""
    if not limits.allow_urls:
        raise BadInputError(f"{field}: image URLs are not fetched (send the image as base64)")
    host = urlsplit(url).hostname
    if not host:
        raise BadInputError(f"{field}: URL has no host")
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except OSError as error:
        raise BadInputError(f"{field}: cannot resolve {host} ({error})") from error
    if not addresses or not all(is_public_address(address) for address in addresses):
        raise BadInputError(f"{field}: URLs to local or private addresses are refused")


def fetch_url(url: str, limits: ImageLimits, field: str) -> bytes:
    check_url_allowed(url, limits, field)
    chunks: list[bytes] = []
    size = 0
    try:
        with httpx.stream("GET", url, timeout=URL_FETCH_TIMEOUT_SECONDS, follow_redirects=False) as response:
            if response.status_code != 200:
                raise BadInputError(f"{field}: URL answered {response.status_code}")
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > limits.max_bytes:
                    raise PayloadTooLargeError(f"{field}: image at URL is larger than {limits.max_bytes} bytes")
                chunks.append(chunk)
    except httpx.HTTPError as error:
        raise BadInputError(f"{field}: could not fetch URL ({error})") from error
    return b"".join(chunks)


def encode_png(image: Image.Image, infotext: str | None = None) -> str:
    """Base64 PNG (no data: prefix, as A1111 answers) with the infotext in its "parameters" chunk."""
    buffer = io.BytesIO()
    prepared = image if image.mode in ("RGB", "RGBA", "L") else image.convert("RGB")
    prepared.save(buffer, format="PNG", **save_options("PNG", infotext))
    return base64.b64encode(buffer.getvalue()).decode("ascii")
