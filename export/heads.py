"""Style and genre heads: the classifiers on an encoder's embeddings, and the head file that
stores them with the identity of the encoder they were trained for (export refuses any other).

`whatart export --head FILE` serves them as a Triton model of their own, composed with the
encoder by an ensemble (heads_export.py); `whatart train-head` trains them (head_training.py).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn
from whatart.retrieval_service.errors import WhatartError
from whatart.retrieval_service.triton.model_contract import HEAD_TASKS, ModelIdentity

Kind = Literal["linear", "mlp"]
KINDS: tuple[Kind, ...] = ("linear", "mlp")
HIDDEN = 512
DROPOUT = 0.5
STD_FLOOR = 1e-3
"""Added to each dimension's standard deviation so that a (nearly) constant dimension is
not blown up into noise at inference."""

FILE_FORMAT = 1


class HeadFileError(WhatartError):
    """A head file is missing, unreadable, or made for another encoder; the message says what to do."""


class Head(nn.Module):
    """Embedding -> logits: standardise each dimension with training statistics, then a
    linear layer or a one-hidden-layer MLP. Softmax is added by the exported graph."""

    def __init__(self, kind: Kind, input_dim: int, n_labels: int, hidden: int = HIDDEN) -> None:
        super().__init__()
        self.kind = kind
        self.input_dim = input_dim
        self.hidden = hidden
        self.register_buffer("mean", torch.zeros(input_dim))
        self.register_buffer("inv_std", torch.ones(input_dim))
        if kind == "linear":
            self.classifier: nn.Module = nn.Linear(input_dim, n_labels)
        else:
            self.classifier = nn.Sequential(
                nn.Linear(input_dim, hidden), nn.ReLU(), nn.Dropout(DROPOUT), nn.Linear(hidden, n_labels)
            )

    def fit_statistics(self, vectors: torch.Tensor) -> None:
        self.mean.copy_(vectors.mean(dim=0))
        self.inv_std.copy_(1.0 / (vectors.std(dim=0) + STD_FLOOR))

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        return self.classifier((embedding - self.mean) * self.inv_std)


@dataclass(frozen=True)
class TrainedHead:
    labels: tuple[str, ...]
    module: Head
    validation_top1: float


@dataclass(frozen=True)
class HeadSet:
    """The contents of a head file: heads by task (in HEAD_TASKS order) and the identity of
    the encoder whose embeddings they were trained on."""

    identity: ModelIdentity
    heads: dict[str, TrainedHead]

    def save(self, path: Path, holdout_fraction: float, holdout_seed: int) -> None:
        """Written beside the target and renamed, so a reader never sees half a file."""
        payload = {
            "format": FILE_FORMAT,
            "model": asdict(self.identity),
            "holdout": {"fraction": holdout_fraction, "seed": holdout_seed},
            "heads": {
                task: {
                    "labels": list(head.labels),
                    "kind": head.module.kind,
                    "input_dim": head.module.input_dim,
                    "hidden": head.module.hidden,
                    "state_dict": head.module.state_dict(),
                    "validation_top1": head.validation_top1,
                }
                for task, head in self.heads.items()
            },
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.partial")
        torch.save(payload, partial)
        os.replace(partial, path)

    @classmethod
    def load(cls, path: Path) -> HeadSet:
        retrain = "write one with `whatart train-head --index DIR --out FILE`"
        if not path.is_file():
            raise HeadFileError(f"head file {path} does not exist; {retrain}")
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
            if payload["format"] != FILE_FORMAT:
                raise HeadFileError(f"{path} has head format {payload['format']}, this whatart reads {FILE_FORMAT}; {retrain}")
            heads = {}
            for task, entry in payload["heads"].items():
                module = Head(entry["kind"], entry["input_dim"], len(entry["labels"]), entry["hidden"])
                module.load_state_dict(entry["state_dict"])
                heads[task] = TrainedHead(tuple(entry["labels"]), module.eval(), entry["validation_top1"])
            identity = ModelIdentity.from_dict(payload["model"])
        except HeadFileError:
            raise
        except Exception as error:  # unpickling and state-dict loading raise many types, with long messages
            raise HeadFileError(f"{path} is not a head file ({type(error).__name__}); {retrain}") from None
        unknown = sorted(set(heads) - set(HEAD_TASKS))
        if unknown:
            raise HeadFileError(f"{path} has heads for unknown tasks {unknown} (known: {', '.join(HEAD_TASKS)}); {retrain}")
        return cls(identity, {task: heads[task] for task in HEAD_TASKS if task in heads})

    def check_matches(self, identity: ModelIdentity, path: Path) -> None:
        """Refuse heads trained on another encoder's embeddings: their inputs would be noise."""
        differences = self.identity.differences(identity)
        if differences:
            raise HeadFileError(
                f"head file {path} was trained on embeddings of another encoder than the one being exported "
                f"({'; '.join(differences)}): retrain it with `whatart train-head` on an index built with "
                f"{identity.name} (weights {identity.weights_sha256[:12]}…), or export the encoder it was trained for"
            )
