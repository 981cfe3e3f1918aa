"""Backbones from ``timm``: ConvNeXt, ViT, EfficientNet and the CLIP / DINOv2 / SigLIP image
towers that timm provides (``convnext_tiny``, ``vit_base_patch16_clip_224.openai``,
``vit_small_patch14_dinov2.lvd142m``, ``vit_base_patch16_siglip_224.webli``, ...).

Pretrained weights, in this order: a local file (``weights_file``: safetensors or a torch
state dict), the user's Hugging Face cache (``cache_dir``, default the hub's own), a download
into that cache when allowed; otherwise a ``DataUnavailableError`` that names the hub repository,
the cache and the flags that fix it. Nothing is fetched unless ``allow_download`` is true.

Normalisation (mean/std) and the native input size come from timm's ``pretrained_cfg``; the
default frozen stages come from ``default_frozen_stages`` (foundation towers: all but the last
two parameter groups; ImageNet CNNs: none).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from geo_assets.errors import DataUnavailableError, InputError

log = logging.getLogger("geoscout.training")

FOUNDATION_TAGS = ("clip", "dinov2", "siglip", "eva")
WEIGHT_FILES = ("model.safetensors", "open_clip_model.safetensors", "pytorch_model.bin")


def is_timm_model(name: str) -> bool:
    import timm

    return bool(timm.is_model(name))


def pretrained_cfg(name: str) -> dict:
    """timm's pretrained config of ``name`` (with its tag, e.g. ``.openai``) as a dict."""
    import timm

    model_name, tag = timm.models.split_model_name_tag(name)
    cfg = timm.models.get_pretrained_cfg(f"{model_name}.{tag}" if tag else model_name)
    if cfg is None:
        raise InputError(f"timm has no pretrained configuration for {name!r}")
    return cfg.to_dict()


def default_frozen_stages(name: str, n_stages: int) -> int:
    """Foundation image towers are frozen but for their last two groups; others train fully."""
    base = name.lower()
    return max(0, n_stages - 2) if any(tag in base for tag in FOUNDATION_TAGS) else 0


def _cached_weights(hub_id: str, cache_dir: Path | None) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    for filename in WEIGHT_FILES:
        hit = try_to_load_from_cache(hub_id, filename,
                                     cache_dir=str(cache_dir) if cache_dir else None)
        if isinstance(hit, str):
            return Path(hit)
    return None


def _download_weights(hub_id: str, cache_dir: Path | None) -> Path:
    from huggingface_hub import hf_hub_download

    errors = []
    for filename in WEIGHT_FILES:
        try:
            return Path(hf_hub_download(hub_id, filename,
                                        cache_dir=str(cache_dir) if cache_dir else None))
        except Exception as exc:  # noqa: BLE001 - hub errors come in many types; next name
            errors.append(f"{filename}: {type(exc).__name__}")
    raise DataUnavailableError(f"could not download the weights of {hub_id} from the Hugging "
                               f"Face hub ({'; '.join(errors)}); pass --weights-file PATH")


def resolve_weights(name: str, weights_file: Path | None, cache_dir: Path | None,
                    allow_download: bool) -> Path:
    """The local file holding ``name``'s pretrained weights (see the module docstring)."""
    if weights_file is not None:
        if not Path(weights_file).is_file():
            raise DataUnavailableError(f"weights file {weights_file} for backbone {name} does "
                                       "not exist: check --weights-file")
        return Path(weights_file)
    hub_id = pretrained_cfg(name).get("hf_hub_id")
    if not hub_id:
        raise DataUnavailableError(f"timm lists no Hugging Face repository for {name}: pass "
                                   "--weights-file PATH.safetensors")
    cached = _cached_weights(hub_id, cache_dir)
    if cached is not None:
        return cached
    if not allow_download:
        from huggingface_hub import constants

        where = cache_dir or constants.HF_HUB_CACHE
        raise DataUnavailableError(
            f"pretrained weights for {name} (Hugging Face repo {hub_id}, file "
            f"{WEIGHT_FILES[0]}) are not in the cache {where}: pass --weights-file "
            "PATH.safetensors, fill the cache (huggingface-cli download "
            f"{hub_id}), or allow downloads (--download-weights)")
    return _download_weights(hub_id, cache_dir)


class TimmFeatures(nn.Module):
    """A timm model without its classifier; ``forward`` gives (N, D, 1, 1) pooled features
    (timm's own pooling: average for CNNs, class/map token for ViTs)."""

    def __init__(self, name: str, net: nn.Module) -> None:
        super().__init__()
        from timm.models import group_modules

        self.name = name
        self.net = net
        self.feature_map = nn.Identity()  # hook point for Grad-CAM (4-D on CNNs only)
        self.out_features = int(net.num_features)
        groups = group_modules(net, net.group_matcher(coarse=True))
        self._stage_names = [groups[k] for k in sorted(groups)]
        cfg = getattr(net, "pretrained_cfg", {}) or {}
        self.mean = tuple(float(v) for v in cfg.get("mean", (0.485, 0.456, 0.406)))
        self.std = tuple(float(v) for v in cfg.get("std", (0.229, 0.224, 0.225)))
        self.native_size = int(cfg.get("input_size", (3, 224, 224))[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.feature_map(self.net.forward_features(x))
        return self.net.forward_head(feats, pre_logits=True)[:, :, None, None]

    def stages(self) -> list[list[nn.Module]]:
        return [[self.net.get_submodule(n) for n in names] for names in self._stage_names]

    def cam_layer(self) -> nn.Module:
        return self.feature_map


def build_timm_backbone(name: str, pretrained: bool, image_size: int | None = None,
                        weights_file: Path | None = None, cache_dir: Path | None = None,
                        allow_download: bool = False) -> TimmFeatures:
    """A timm backbone; ViTs are built for ``image_size`` (position embeddings resampled)."""
    import timm

    if not timm.is_model(name):
        from training.config import BACKBONES

        raise InputError(f"unknown backbone {name!r}: choose one of {', '.join(BACKBONES)} "
                         "or a timm model name (timm.list_models(pretrained=True))")
    kwargs: dict = {"num_classes": 0}
    if image_size and pretrained_cfg(name).get("fixed_input_size"):
        kwargs["img_size"] = image_size
    if not pretrained:
        return TimmFeatures(name, timm.create_model(name, pretrained=False, **kwargs))
    path = resolve_weights(name, weights_file, cache_dir, allow_download)
    try:
        net = timm.create_model(name, pretrained=True, pretrained_cfg_overlay={"file": str(path)},
                                **kwargs)
    except (RuntimeError, KeyError, ValueError) as exc:
        raise InputError(f"weights file {path} does not fit backbone {name}: {exc}") from exc
    log.info("backbone %s: pretrained weights from %s", name, path)
    return TimmFeatures(name, net)
