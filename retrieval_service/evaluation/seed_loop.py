"""The seed-style loop `whatart bench throughput` compares against, run in the same process.

What the prior art did, one image at a time: PIL decode -> torchvision transforms -> eager
torch ResNet50 at batch 1 -> FAISS exact search (k=5) over the gallery's sharp embeddings.
It runs the same weights as the model Triton serves (checked by fingerprint), so its answers
are comparable; when the served encoder is not a torchvision ResNet50 (SSCD ships as an
INT8 ONNX file), it runs seeded random weights against as many random 2048-d gallery
vectors as the index holds, and measures speed only. Needs torch and
torchvision (the `export` extra).
"""

from __future__ import annotations

import time
from pathlib import Path

import faiss
import numpy as np
from whatart.export.packaged import PACKAGED_ENCODERS
from whatart.retrieval_service.errors import WhatartError
from whatart.retrieval_service.evaluation.service_bench import Answers

SEED_K = 5


class BaselineMismatch(WhatartError):
    """The baseline cannot run the weights of the served model; the message says what to pass."""


SPEED_ONLY_SEED = 0
"""Seed of the random ResNet50 weights the loop runs when the served encoder is no torchvision ResNet50."""


def _seed_model(encoder: str, weights: Path | None, random_seed: int | None, served_sha256: str):
    """torchvision ResNet50 with its classifier removed (pooled 2048-d features), loaded with
    the served model's weights (random ones when those are not torchvision's)."""
    from torch import nn
    from whatart.export.encoders import ENCODERS, load_backbone, weights_fingerprint

    if encoder in PACKAGED_ENCODERS:
        trunk = load_backbone(ENCODERS["resnet50"], None, SPEED_ONLY_SEED)
    elif encoder != "resnet50":
        raise BaselineMismatch(f"the seed-style baseline is ResNet50; the served model is a {encoder}")
    else:
        trunk = load_backbone(ENCODERS[encoder], weights, random_seed)
    if encoder == "resnet50" and weights_fingerprint(trunk) != served_sha256:
        raise BaselineMismatch(
            "the baseline's weights differ from the served model's (weights_sha256): pass the --weights file or "
            "--random-weights --seed the model was exported with"
        )
    resnet = trunk.resnet
    resnet.fc = nn.Identity()
    return resnet.eval()


def run_seed_loop(paths: list[Path], gallery_vectors: np.ndarray, gallery_ids: list[str],
                  encoder: str, weights: Path | None, random_seed: int | None, served_sha256: str) -> Answers:
    """The loop over `paths`, answers kept as the service's are (file -> top id), so both are scored alike."""
    import torch
    from PIL import Image
    from torchvision import transforms
    from whatart.export.encoders import ENCODERS

    spec = ENCODERS["resnet50"]
    model = _seed_model(encoder, weights, random_seed, served_sha256)
    same_weights = encoder == "resnet50"
    if not same_weights:  # as many gallery vectors as the index holds, in ResNet50's 2048 dimensions
        gallery_vectors = np.random.default_rng(SPEED_ONLY_SEED).standard_normal((len(gallery_vectors), 2048), dtype=np.float32)
        gallery_vectors /= np.linalg.norm(gallery_vectors, axis=1, keepdims=True)
    preprocess = transforms.Compose([
        transforms.Resize((spec.input_size, spec.input_size)),
        transforms.ToTensor(),
        transforms.Normalize(spec.mean, spec.std),
    ])
    index = faiss.IndexFlatIP(gallery_vectors.shape[1])
    index.add(np.ascontiguousarray(gallery_vectors, dtype=np.float32))
    latencies, top_ids = [], {}
    started = time.perf_counter()
    with torch.inference_mode():
        for path in paths:
            begun = time.perf_counter()
            with Image.open(path) as image:
                batch = preprocess(image.convert("RGB")).unsqueeze(0)
            features = torch.nn.functional.normalize(model(batch), dim=1).numpy()
            _, found = index.search(features, SEED_K)
            latencies.append((time.perf_counter() - begun) * 1e3)
            top_ids[str(path)] = gallery_ids[int(found[0, 0])]
    return Answers(len(paths), time.perf_counter() - started, latencies, top_ids, same_weights=same_weights)
