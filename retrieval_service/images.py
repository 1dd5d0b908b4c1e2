"""Decode untrusted image bytes and turn them into the encoder's uint8 input.

Every failure raises ImageError with a message a user can act on; the HTTP layer maps it
to a 4xx. Normalisation is not done here: it lives inside the ONNX graph.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from pillow_heif import register_heif_opener
from whatart.retrieval_service.errors import WhatartError

register_heif_opener()  # HEIC/HEIF: what phones take photos in
ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "TIFF", "BMP", "HEIF")
MIN_SIDE = 32
"""Smaller images hold nothing to identify (and local features cannot be extracted from them)."""


class ImageError(WhatartError, ValueError):
    """The bytes are not an image whatart can read; the message says what is wrong."""


def decode_image(data: bytes, max_pixels: int, draft_size: int | None = None) -> Image.Image:
    """Bytes -> RGB image, upright (EXIF orientation applied).

    `draft_size` lets JPEG decoding downscale by 2/4/8 on the fly when the image is far
    larger than the model input: much faster, no visible difference at 224 px.
    """
    if not data:
        raise ImageError("the upload is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            if image.format not in ACCEPTED_FORMATS:
                raise ImageError(
                    f"{image.format} images are not accepted; send one of {', '.join(ACCEPTED_FORMATS)}"
                )
            width, height = image.size
            if min(width, height) < MIN_SIDE:
                raise ImageError(f"the image is {width}x{height} pixels; at least {MIN_SIDE} pixels a side are needed")
            if width * height > max_pixels:
                raise ImageError(
                    f"the image is {width}x{height} = {width * height:,} pixels; the limit is {max_pixels:,}"
                )
            if draft_size and image.format == "JPEG":
                image.draft("RGB", (draft_size, draft_size))
            image = ImageOps.exif_transpose(image)
            return _to_rgb(image)
    except UnidentifiedImageError:
        raise ImageError(f"not an image (or an unsupported format); send one of {', '.join(ACCEPTED_FORMATS)}") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError("the image declares too many pixels (decompression bomb)") from None
    except (OSError, SyntaxError, ValueError) as error:
        if isinstance(error, ImageError):
            raise
        raise ImageError(f"the image is damaged or truncated ({error})") from None


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

