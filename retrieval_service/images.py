"""Decode untrusted image bytes and turn them into the encoder's uint8 input.

Every failure raises ImageError with a message a user can act on; the HTTP layer maps it
to a 4xx. Normalisation is not done here: it lives inside the ONNX graph.
"""

from __future__ import annotations

import io
import warnings
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from pillow_heif import register_heif_opener
from whatart.retrieval_service.errors import WhatartError

register_heif_opener()  # HEIC/HEIF: what phones take photos in
ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "TIFF", "BMP", "HEIF")
MIN_SIDE = 32
"""Smaller images hold nothing to identify (and local features cannot be extracted from them)."""
MAX_ASPECT_RATIO = 20.0
"""The default limit on long side / short side (settings.max_image_aspect_ratio): a photo of
a painting is no strip, and with a short side of at least 512 / 20 px after scaling, every
stage (ORB's pyramid, the colour signature, the centre crops) has pixels to work on."""
REDUCE_ABOVE = 2
"""Non-JPEG images larger than this many times the size the caller needs are shrunk right
after decoding (JPEG's draft mode decodes between 1 and 2 times it)."""
STRIP_ROWS = 64
"""output rows reduced at a time (a few MB of a strip copy, whatever the canvas)"""


class ImageError(WhatartError, ValueError):
    """The bytes are not an image whatart can read; the message says what is wrong."""


def decode_image(data: bytes, max_pixels: int, draft_size: int | None = None,
                 max_aspect_ratio: float = MAX_ASPECT_RATIO) -> Image.Image:
    """Bytes -> RGB image, upright (EXIF orientation applied).

    `draft_size`: the longest side the caller needs. JPEG decoding downscales by 2/4/8 on the
    fly towards it; other formats are decoded whole, then reduced before any conversion, so
    a small PNG declaring a huge canvas costs one decode buffer, not a copy per mode change.
    """
    image = _opened(data, max_pixels, max_aspect_ratio)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            if draft_size and image.format == "JPEG":
                image.draft("RGB", (draft_size, draft_size))
            elif draft_size and max(image.size) > REDUCE_ABOVE * draft_size:
                image = _reduced(image, REDUCE_ABOVE * draft_size)
            image = ImageOps.exif_transpose(image)
            return _to_rgb(image)
    except (OSError, SyntaxError, ValueError) as error:
        raise _decode_error(error) from None


class Declared(NamedTuple):
    """What an image's header says, before anything is decoded."""

    format: str
    size: tuple[int, int]


def declared(data: bytes) -> Declared | None:
    """The format and size the header declares, or None for what will not open (decode_image
    then says why)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return Declared(str(image.format), image.size)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return None


def decoding_pixels(header: Declared | None, draft_size: int | None = None) -> int:
    """How many pixels decoding the image holds in memory at once (the declared canvas, less
    JPEG's draft scaling), for budgeting concurrent decodes; 0 for what will not open."""
    if header is None:
        return 0
    (width, height), scale = header.size, 1
    if draft_size and header.format == "JPEG":
        while scale < 8 and min(width, height) // (2 * scale) >= draft_size:
            scale *= 2
    return (width // scale) * (height // scale)


def upload_scale(header: Declared | None, decoded: Image.Image) -> float:
    """Uploaded pixels per decoded pixel (JPEG may decode smaller; EXIF rotation aside, the
    long sides correspond)."""
    return max(header.size) / max(decoded.size) if header else 1.0


def _opened(data: bytes, max_pixels: int, max_aspect_ratio: float) -> Image.Image:
    """The lazily opened image (nothing decoded yet), refused unless its format, size and
    shape are ones every stage handles."""
    if not data:
        raise ImageError("the upload is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageError(f"not an image (or an unsupported format); send one of {', '.join(ACCEPTED_FORMATS)}") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise _decode_error(error) from None
    if image.format not in ACCEPTED_FORMATS:
        raise ImageError(f"{image.format} images are not accepted; send one of {', '.join(ACCEPTED_FORMATS)}")
    width, height = image.size
    if min(width, height) < MIN_SIDE:
        raise ImageError(f"the image is {width}x{height} pixels; at least {MIN_SIDE} pixels a side are needed")
    if width * height > max_pixels:
        raise ImageError(f"the image is {width}x{height} = {width * height:,} pixels; the limit is {max_pixels:,}")
    if max(width, height) > max_aspect_ratio * min(width, height):
        raise ImageError(f"the image is {width}x{height} pixels, {max(width, height) / min(width, height):.2f} times longer "
                         f"than wide; at most {max_aspect_ratio:g} times is accepted")
    return image


def _reduced(image: Image.Image, longest: int) -> Image.Image:
    """Decoded and shrunk by an integer factor towards `longest` pixels on its long side, in
    its own mode, without a second full-size image: box-reduced a strip at a time (Pillow
    premultiplies an RGBA image into a full-size copy before reducing it whole); modes Pillow
    cannot reduce (bilevel, palette, 16-bit) by nearest neighbour, which copies nothing."""
    factor = max(1, max(image.size) // longest)
    width, height = image.size
    if image.mode in ("1", "P", "I;16", "I;16L", "I;16B"):
        return image.resize((max(1, width // factor), max(1, height // factor)), Image.Resampling.NEAREST)
    image.load()
    reduced = Image.new(image.mode, (-(-width // factor), -(-height // factor)))
    rows = factor * STRIP_ROWS
    for top in range(0, height, rows):
        reduced.paste(image.crop((0, top, width, min(top + rows, height))).reduce(factor), (0, top // factor))
    return reduced


def _decode_error(error: Exception) -> ImageError:
    """What went wrong in words a user can act on (Pillow's own messages name its internals)."""
    if isinstance(error, ImageError):
        return error
    if isinstance(error, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return ImageError("the image declares too many pixels (a decompression bomb)")
    if "MAX_TEXT" in str(error):  # PngImagePlugin's limits on zTXt/iTXt/iCCP chunks
        return ImageError("the image's metadata (text or colour-profile chunks) unpacks to too much data (a decompression bomb)")
    return ImageError("the image is damaged or truncated: it could not be decoded")


def _to_rgb(image: Image.Image) -> Image.Image:
    """Any mode (palette, alpha, CMYK, 16-bit, grayscale) -> RGB; transparency over white."""
    if image.mode == "RGB":
        image.load()
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float32)
        peak = max(float(array.max()), 1.0)
        return Image.fromarray((array * (255.0 / peak)).astype(np.uint8)).convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, image).convert("RGB")
    return image.convert("RGB")


def to_model_input(image: Image.Image, size: int) -> np.ndarray:
    """RGB image -> uint8 [size, size, 3]. The whole painting is kept (no centre crop):
    cropping would drop the parts that distinguish one work from another."""
    resized = image.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.uint8)

