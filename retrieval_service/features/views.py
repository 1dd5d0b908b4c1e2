"""Several views of one image, so that a global descriptor survives what photos do.

Measured on the 15,210-work benchmark gallery (see docs/accuracy.md): a CNN's global embedding falls
apart under blur, rotation and a wall around the painting. Cheap fixes that compose:
- gallery side, each artwork is indexed under several blur levels (the index stores one
  vector per view, all with the artwork's id);
- query side, the photo is encoded under a few rotations and centre crops (one Triton
  request), and every artwork keeps its best similarity over all view pairs.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter
from whatart.retrieval_service.images import to_model_input

REFERENCE_SIDE = 224
"""Blur radii are given in pixels of a 224-px image and scaled to the image's real size."""


def gallery_views(image: Image.Image, size: int, blurs: tuple[float, ...]) -> list[np.ndarray]:
    """The artwork itself (blur 0) and blurred copies, as model inputs."""
    scale = max(image.size) / REFERENCE_SIDE
    return [
        to_model_input(image if sigma == 0 else image.filter(ImageFilter.GaussianBlur(sigma * scale)), size)
        for sigma in blurs
    ]


def query_views(image: Image.Image, size: int, rotations: tuple[float, ...], crops: tuple[float, ...]) -> np.ndarray:
    """uint8 [n_views, size, size, 3]: the photo under each rotation (degrees), then centre
    crops keeping each linear fraction of the photo (for a painting with wall around it)."""
    views = [image if angle == 0 else image.rotate(angle, resample=Image.Resampling.BILINEAR) for angle in rotations]
    width, height = image.size
    for fraction in crops:
        margin_x, margin_y = width * (1 - fraction) / 2, height * (1 - fraction) / 2
        views.append(image.crop((margin_x, margin_y, width - margin_x, height - margin_y)))
    return np.stack([to_model_input(view, size) for view in views])
