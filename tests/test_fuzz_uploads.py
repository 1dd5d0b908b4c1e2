"""Fuzzing /v1/identify with generated uploads against the real service: valid images in
every accepted format and pixel mode, the same bytes truncated, corrupted or prefixed with
garbage, random bytes, and bad `k` fields. Every answer must be a 200 or a 4xx that says
what is wrong: never a 5xx, and the service stays up."""

from __future__ import annotations

import io

import httpx
import numpy as np
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image
from pillow_heif import register_heif_opener

MODES_BY_FORMAT = {
    "JPEG": ("L", "RGB", "CMYK"),
    "PNG": ("1", "L", "LA", "P", "RGB", "RGBA", "I;16"),
    "WEBP": ("RGB", "RGBA"),
    "GIF": ("L", "P"),
    "TIFF": ("1", "L", "RGB", "RGBA", "CMYK", "I;16"),
    "BMP": ("1", "L", "P", "RGB"),
    "HEIF": ("RGB", "RGBA"),
}
ACCEPTABLE = {200, 400, 413, 422}

register_heif_opener()  # so that this process can write HEIC files too


@st.composite
def images(draw: st.DrawFn) -> bytes:
    """A real image file of a drawn format, pixel mode and size (1 px to 300 px a side)."""
    image_format = draw(st.sampled_from(sorted(MODES_BY_FORMAT)))
    mode = draw(st.sampled_from(MODES_BY_FORMAT[image_format]))
    width, height = draw(st.integers(1, 300)), draw(st.integers(1, 300))
    seed = draw(st.integers(0, 2**32 - 1))
    noise = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    picture = Image.fromarray(noise[..., 0].astype(np.uint16) * 257) if mode == "I;16" else Image.fromarray(noise).convert(mode)
    buffer = io.BytesIO()
    picture.save(buffer, image_format)
    return buffer.getvalue()


@st.composite
def damaged(draw: st.DrawFn) -> bytes:
    """A real image cut short, with bytes overwritten, or behind garbage."""
    data = draw(images())
    how = draw(st.sampled_from(["truncate", "overwrite", "prefix"]))
    if how == "truncate":
        return data[: draw(st.integers(0, max(len(data) - 1, 0)))]
    if how == "overwrite":
        position = draw(st.integers(0, len(data) - 1))
        patch = draw(st.binary(min_size=1, max_size=16))
        return data[:position] + patch + data[position + len(patch):]
    return draw(st.binary(min_size=1, max_size=64)) + data


uploads = st.one_of(images(), damaged(), st.binary(max_size=2048))
k_fields = st.one_of(st.none(), st.integers(-3, 130).map(str), st.text(max_size=8))


@settings(max_examples=500, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(data=uploads, k=k_fields, field=st.sampled_from(["image", "image", "image", "photo"]))
def test_no_upload_gets_a_5xx(service_url: str, data: bytes, k: str | None, field: str) -> None:
    form = {} if k is None else {"k": k}
    response = httpx.post(f"{service_url}/v1/identify", files={field: ("upload", data)}, data=form, timeout=60)
    assert response.status_code in ACCEPTABLE, (response.status_code, response.text[:300])
    event(f"HTTP {response.status_code}")
    if response.status_code != 200:
        detail = response.json()["detail"]
        assert detail and isinstance(detail, (str, list)), response.text


def test_the_service_is_healthy_after_the_fuzzing(service_url: str) -> None:
    assert httpx.get(f"{service_url}/health", timeout=10).status_code == 200
