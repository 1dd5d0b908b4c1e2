"""The tensor contract between an exported encoder and everything that calls it.

Export writes models with these names and the service reads them back from Triton, so both
sides import them from here rather than repeating string literals.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

INPUT_NAME = "image"
"""uint8 RGB pixels, NHWC: [batch, height, width, 3]. Normalisation happens inside the graph.
The name is that of the packaged SSCD graphs' input, which may not be edited (export/packaged.py)."""

OUTPUT_NAME = "embedding"
"""float32 [batch, dim], L2-normalised, so inner product is cosine similarity."""

PARAMETER_PREFIX = "whatart."
"""Prefix of the config.pbtxt parameters that carry a model's identity."""

HEAD_TASKS = ("style", "genre")
"""Optional classification heads on the embedding (`whatart train-head`), served as a model
of their own and composed with the encoder by a Triton ensemble."""


def heads_model_name(encoder: str) -> str:
    """The Triton model of an encoder's heads: embedding in, each head's probabilities out."""
    return f"{encoder}-heads"


def ensemble_name(encoder: str) -> str:
    """The Triton ensemble encoder -> heads: what the service asks when heads exist."""
    return f"{encoder}-with-heads"


def head_output_name(task: str) -> str:
    """float32 [batch, n_labels] softmax probabilities of one head, e.g. `style_probs`."""
    return f"{task}_probs"


def head_labels_parameter(task: str) -> str:
    """config.pbtxt parameter holding the head's label names as a JSON list of strings."""
    return f"{PARAMETER_PREFIX}labels.{task}"


@dataclass(frozen=True)
class ModelIdentity:
    """What makes two embeddings comparable. An index built by one identity must never be
    searched with vectors from another, so the index manifest stores this and the service
    compares it with what Triton serves."""

    name: str
    weights_sha256: str
    preprocessing: str
    dim: int
    pooling: str

    def to_parameters(self) -> dict[str, str]:
        """Triton config parameters (string values) that carry this identity."""
        return {PARAMETER_PREFIX + key: str(value) for key, value in asdict(self).items()}

    @classmethod
    def from_parameters(cls, parameters: dict[str, str]) -> ModelIdentity:
        """Read the identity back from a served model's config parameters."""
        missing = [f.name for f in fields(cls) if PARAMETER_PREFIX + f.name not in parameters]
        if missing:
            raise ValueError(
                f"the served model carries no whatart identity ({', '.join(missing)} missing): "
                "re-export it with `whatart export`"
            )
        values = {f.name: parameters[PARAMETER_PREFIX + f.name] for f in fields(cls)}
        return cls(**{**values, "dim": int(values["dim"])})

    @classmethod
    def from_dict(cls, data: dict) -> ModelIdentity:
        return cls(**{f.name: data[f.name] for f in fields(cls)})

    def differences(self, other: ModelIdentity) -> list[str]:
        """Human-readable list of the fields where two identities disagree."""
        return [
            f"{f.name}: {getattr(self, f.name)!r} != {getattr(other, f.name)!r}"
            for f in fields(self)
            if getattr(self, f.name) != getattr(other, f.name)
        ]
