"""``model.pt``: final weights plus everything needed to use them without the dataset:
backbone name, class tables, per-level temperatures and the input preprocessing."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from geo_assets.errors import InputError
from training.checkpoint import atomic_save
from training.hierarchy import ClassTables
from training.models import GeoModel, build_model

FORMAT = "geoscout-model/1"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class ModelBundle:
    model: GeoModel
    tables: ClassTables
    temperatures: list[float]
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    info: dict


def save_bundle(path: Path, model: GeoModel, backbone: str, tables: ClassTables,
                temperatures: list[float], image_size: int, info: dict) -> None:
    atomic_save({"format": FORMAT, "state_dict": model.state_dict(), "backbone": backbone,
                 "tables": tables.to_dict(), "temperatures": list(temperatures),
                 "image_size": image_size, "mean": IMAGENET_MEAN, "std": IMAGENET_STD,
                 "info": info}, path)


def load_bundle(path: str | Path, device: torch.device | str = "cpu") -> ModelBundle:
    """Load a model file; a clear error when it is missing or not a geoscout model."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"model file {path} not found: train one (materialize trained_model) "
                         "or pass --model PATH/model.pt")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InputError(f"{path} is not a readable geoscout model file: {exc}") from exc
    if not isinstance(saved, dict) or saved.get("format") != FORMAT:
        raise InputError(f"{path} is not a geoscout model file (format {FORMAT})")
    tables = ClassTables.from_dict(saved["tables"])
    model = build_model(saved["backbone"], tables.num_classes)
    model.load_state_dict(saved["state_dict"])
    model.to(device).eval()
    return ModelBundle(model, tables, list(saved["temperatures"]), int(saved["image_size"]),
                       tuple(saved["mean"]), tuple(saved["std"]), dict(saved.get("info", {})))
