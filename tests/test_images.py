"""Decoding untrusted uploads: orientation, odd modes, and clear errors for bad input."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from whatart.retrieval_service.images import ImageError, decode_image, to_model_input

LIMIT = 50_000_000


def _encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def test_exif_orientation_is_applied() -> None:
    wide = Image.new("RGB", (80, 40), (200, 10, 10))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    decoded = decode_image(_encode(wide, "JPEG", exif=exif), LIMIT)
    assert decoded.size == (40, 80)


@pytest.mark.parametrize(
    "image, fmt",
    [
        (Image.new("RGBA", (40, 40), (0, 0, 255, 0)), "PNG"),
        (Image.new("L", (40, 40), 128), "PNG"),
        (Image.new("I;16", (40, 40), 40000), "PNG"),
        (Image.new("P", (40, 40), 3), "GIF"),
        (Image.new("CMYK", (40, 40), (0, 255, 0, 0)), "TIFF"),
        (Image.new("RGB", (40, 40), (1, 2, 3)), "WEBP"),
        (Image.new("RGB", (40, 40), (1, 2, 3)), "BMP"),
    ],
    ids=["rgba-png", "gray-png", "16bit-png", "palette-gif", "cmyk-tiff", "webp", "bmp"],
)
def test_every_accepted_mode_becomes_rgb_model_input(image: Image.Image, fmt: str) -> None:
    pixels = to_model_input(decode_image(_encode(image, fmt), LIMIT), 224)
    assert pixels.shape == (224, 224, 3) and pixels.dtype == np.uint8


def test_transparency_is_composited_on_white() -> None:
    clear = Image.new("RGBA", (40, 40), (0, 0, 0, 0))
    assert decode_image(_encode(clear, "PNG"), LIMIT).getpixel((5, 5)) == (255, 255, 255)


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "empty"),
        (b"hello, this is text", "not an image"),
        (_encode(Image.new("RGB", (64, 64)), "JPEG")[:200], "damaged or truncated"),
        (_encode(Image.new("RGB", (16, 16)), "ICO"), "not accepted"),
        (_encode(Image.new("RGB", (500, 12)), "PNG"), "500x12 pixels; at least 32 pixels a side"),
    ],
    ids=["empty", "text", "truncated-jpeg", "ico", "too-small"],
)
def test_bad_input_is_refused_with_a_reason(data: bytes, message: str) -> None:
    with pytest.raises(ImageError, match=message):
        decode_image(data, LIMIT)


def test_heic_photos_are_accepted() -> None:
    from pillow_heif import register_heif_opener

    register_heif_opener()
    decoded = decode_image(_encode(Image.new("RGB", (64, 48), (200, 30, 30)), "HEIF"), LIMIT)
    assert decoded.mode == "RGB" and decoded.size == (64, 48)
    assert np.abs(np.asarray(decoded, dtype=int)[24, 32] - [200, 30, 30]).max() <= 8


def test_too_many_pixels_is_refused_before_decoding() -> None:
    with pytest.raises(ImageError, match="the limit is 1,000"):
        decode_image(_encode(Image.new("RGB", (100, 100)), "PNG"), max_pixels=1_000)
