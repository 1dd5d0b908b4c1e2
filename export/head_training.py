"""`whatart train-head`: style and genre classifiers trained on a gallery's embeddings.

A head learns from the index's vectors, so it is tied to the encoder that made them (the
head file, heads.py, records its identity).

Training skips the open-set hold-out (retrieval_service/evaluation/holdout.py), so the
evaluation can measure the heads on works they never saw, and splits train / validation
by artwork: every vector (view) of an artwork lands on the same side.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from whatart.export.heads import KINDS, Head, HeadFileError, HeadSet, Kind, TrainedHead
from whatart.retrieval_service.evaluation.holdout import is_held_out
from whatart.retrieval_service.index.gallery import Gallery
from whatart.retrieval_service.index.metadata import Artwork, MetadataStore
from whatart.retrieval_service.triton.model_contract import HEAD_TASKS, ModelIdentity

log = logging.getLogger(__name__)

VALIDATION_FRACTION = 0.1
BATCH_SIZE = 1024
MAX_EPOCHS = 300
PATIENCE = 10
"""Epochs without a lower validation loss before training stops (and keeps the best)."""
MIN_IMPROVEMENT = 1e-3
"""Validation loss (nats) an epoch must gain to count as lower: on separable data the loss
creeps towards zero for ever, and this stops it there."""
LEARNING_RATE = 1e-3
WEIGHT_DECAY = 1e-2
METADATA_CHUNK = 10_000
"""Row ids per SQLite query (well under SQLite's limit on bound parameters)."""


@dataclass(frozen=True)
class TrainingSet:
    """Every vector of an index (an artwork may have several, one per gallery view), the
    metadata row id (artwork) each belongs to, and the artworks."""

    vectors: np.ndarray
    row_ids: np.ndarray
    artworks: dict[int, Artwork]


def _lookup(store: MetadataStore, row_ids: Iterable[int]) -> dict[int, Artwork]:
    wanted = list(row_ids)
    found: dict[int, Artwork] = {}
    for start in range(0, len(wanted), METADATA_CHUNK):
        found.update(store.by_row_ids(wanted[start:start + METADATA_CHUNK]))
    return found


def load_training_set(index_dir: Path) -> tuple[ModelIdentity, TrainingSet]:
    """The index's identity and its L2-normalised vectors (what the exported graph feeds the heads)."""
    gallery = Gallery.load(index_dir)  # verifies checksums and counts
    try:
        stored = np.asarray(gallery.embeddings, dtype=np.float32)  # [artworks, views, dim]
        vectors = stored.reshape(-1, stored.shape[2])
        row_ids = np.repeat(np.arange(len(stored)), stored.shape[1])
        artworks = _lookup(gallery.metadata, (int(i) for i in np.unique(row_ids)))
    finally:
        gallery.close()
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return gallery.manifest.model, TrainingSet(vectors / np.maximum(norms, 1e-12), row_ids, artworks)


def validation_mask(row_ids: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """A seeded choice of artworks (not vectors) for validation; True for each of their vectors."""
    artworks = np.unique(row_ids)
    chosen = np.random.default_rng(seed).choice(artworks, max(1, round(fraction * len(artworks))), replace=False)
    return np.isin(row_ids, chosen)


def _top1(logits: torch.Tensor, targets: torch.Tensor) -> float:
    return float((logits.argmax(dim=1) == targets).float().mean())


def fit_head(
    kind: Kind, train: tuple[torch.Tensor, torch.Tensor], validation: tuple[torch.Tensor, torch.Tensor],
    n_labels: int, seed: int,
) -> tuple[Head, float]:
    """AdamW on mini-batches, stopped when the validation loss has not improved (by
    MIN_IMPROVEMENT) for PATIENCE epochs; returns the best epoch's head (in eval mode)
    and its validation top-1."""
    torch.manual_seed(seed)
    x, y = train
    x_val, y_val = validation
    head = Head(kind, x.shape[1], n_labels)
    head.fit_statistics(x)
    optimiser = torch.optim.AdamW(head.parameters(), lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY)
    loss_fn = nn.CrossEntropyLoss()
    best_loss, best_top1, best_state, stale = float("inf"), 0.0, head.state_dict(), 0
    for _ in range(MAX_EPOCHS):
        head.train()
        for batch in torch.randperm(len(x)).split(BATCH_SIZE):
            optimiser.zero_grad()
            loss_fn(head(x[batch]), y[batch]).backward()
            optimiser.step()
        head.eval()
        with torch.no_grad():
            logits = head(x_val)
            loss = float(loss_fn(logits, y_val))
        if loss < best_loss - MIN_IMPROVEMENT:
            best_loss, best_top1, stale = loss, _top1(logits, y_val), 0
            best_state = {k: v.clone() for k, v in head.state_dict().items()}
        else:
            stale += 1
            if stale >= PATIENCE:
                break
    head.load_state_dict(best_state)
    return head.eval(), best_top1


def _train_task(
    task: str, data: TrainingSet, usable: np.ndarray, validation: np.ndarray, min_examples: int, seed: int
) -> tuple[TrainedHead | None, dict]:
    """One task's head (None when fewer than two labels have enough artworks) and its summary."""
    label_by_row = {row: getattr(artwork, task).strip() for row, artwork in data.artworks.items()}
    label_of = np.array([label_by_row[int(r)] for r in data.row_ids], dtype=object)
    eligible = usable & (label_of != "")
    counts = Counter(label_by_row[int(r)] for r in np.unique(data.row_ids[eligible]))
    labels = tuple(sorted(label for label, count in counts.items() if count >= min_examples))
    summary: dict = {"labels": list(labels), "ignored_labels": len(counts) - len(labels)}
    if len(labels) < 2:
        summary["skipped"] = f"fewer than 2 labels with at least {min_examples} artworks"
        return None, summary
    keep = eligible & np.isin(label_of, labels)
    targets = np.searchsorted(np.array(labels, dtype=object), label_of[keep]).astype(np.int64)
    x, y, in_val = torch.from_numpy(data.vectors[keep]), torch.from_numpy(targets), validation[keep]
    train, val = (x[~in_val], y[~in_val]), (x[in_val], y[in_val])
    if len(val[0]) == 0 or len(train[0]) == 0:
        summary["skipped"] = "no artworks left for training or validation; use a larger gallery"
        return None, summary
    fitted = {kind: fit_head(kind, train, val, len(labels), seed) for kind in KINDS}
    chosen = max(KINDS, key=lambda kind: fitted[kind][1])
    majority = int(torch.bincount(train[1], minlength=len(labels)).argmax())
    kept_rows = data.row_ids[keep]
    summary.update({
        "n_train": int(len(np.unique(kept_rows[~in_val]))),
        "n_val": int(len(np.unique(kept_rows[in_val]))),
        "train_vectors": len(train[0]),
        "val_vectors": len(val[0]),
        "majority_val_top1": round(float((val[1] == majority).float().mean()), 4),
        **{f"{kind}_val_top1": round(fitted[kind][1], 4) for kind in KINDS},
        "chosen": chosen,
    })
    module, top1 = fitted[chosen]
    return TrainedHead(labels, module, top1), summary


ExtraVectors = Callable[[dict[int, Artwork], ModelIdentity], tuple[np.ndarray, np.ndarray]]
"""(training artworks by row id, the index's encoder) -> (more unit vectors, their row ids)"""


def train_heads(
    index_dir: Path, out: Path, holdout_fraction: float, holdout_seed: int, min_examples: int, seed: int = 0,
    extra_vectors: ExtraVectors | None = None,
) -> dict:
    """Train a head per task on the index's vectors (and `extra_vectors` of the artworks
    outside the hold-out, e.g. photo-like copies), save them to `out`, return a summary."""
    started = time.perf_counter()
    identity, data = load_training_set(index_dir)
    held_rows = {row for row, artwork in data.artworks.items() if is_held_out(artwork.id, holdout_fraction, holdout_seed)}
    if extra_vectors is not None:
        vectors, row_ids = extra_vectors({r: a for r, a in data.artworks.items() if r not in held_rows}, identity)
        data = TrainingSet(np.concatenate([data.vectors, vectors]), np.concatenate([data.row_ids, row_ids]), data.artworks)
    usable = ~np.isin(data.row_ids, list(held_rows))
    validation = np.zeros(len(data.row_ids), dtype=bool)
    validation[usable] = validation_mask(data.row_ids[usable], VALIDATION_FRACTION, seed)
    heads, tasks = {}, {}
    for task in HEAD_TASKS:
        head, tasks[task] = _train_task(task, data, usable, validation, min_examples, seed)
        if head is None:
            log.info("%s: no head (%s)", task, tasks[task]["skipped"])
        else:
            heads[task] = head
            log.info("%s head: %s, validation top-1 %.3f", task, tasks[task]["chosen"], head.validation_top1)
    if not heads:
        raise HeadFileError(
            f"no head could be trained from {index_dir}: no task has 2 labels with at least {min_examples} artworks "
            "(lower --min-examples, or ingest a gallery with style/genre metadata)"
        )
    HeadSet(identity, heads).save(out, holdout_fraction, holdout_seed)
    return {
        "model": identity.name,
        "weights_sha256": identity.weights_sha256,
        "artworks": len(data.artworks),
        "vectors": len(data.row_ids),
        "held_out": len(held_rows),
        "tasks": tasks,
        "out": str(out),
        "seconds": round(time.perf_counter() - started, 1),
    }
