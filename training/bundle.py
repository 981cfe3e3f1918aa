"""``model.pt``: final weights plus everything needed to use them without the dataset:
backbone name, class tables, per-level temperatures, the input preprocessing (size and the
backbone's mean/std), whether it has a location head, the heads' hidden width (``mlp`` heads;
None for linear ones), and the decisions taken on the
validation fold: ``location`` (``{"method", "validation_median_km", "n"}``: the estimator of
``training.inference.estimate_locations`` that the report and ``predict`` use) and
``calibration`` (per level: temperature, fitted or the reason why not), and ``retrieval``
(the training images' embeddings, lat/lon and finest class for the ``retrieval`` estimator,
or None)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from geo_assets.errors import InputError
from training.checkpoint import atomic_save
from training.hierarchy import ClassTables
from training.inference import RetrievalIndex
from training.models import GeoModel, build_model, normalisation

FORMAT = "geoscout-model/1"


@dataclass
class ModelBundle:
    model: GeoModel
    tables: ClassTables
    temperatures: list[float]
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    info: dict
    location: dict = field(default_factory=lambda: {"method": "weighted_mean"})
    calibration: list[dict] = field(default_factory=list)
    retrieval: RetrievalIndex | None = None  # training images' embeddings, or None

    @property
    def location_method(self) -> str:
        """The location estimator chosen on the validation fold (older files: weighted_mean)."""
        return str(self.location.get("method", "weighted_mean"))


def save_bundle(path: Path, model: GeoModel, backbone: str, tables: ClassTables,
                temperatures: list[float], image_size: int, info: dict,
                decisions: dict | None = None) -> None:
    mean, std = normalisation(model.backbone)
    decisions = decisions or {}
    atomic_save({"format": FORMAT, "state_dict": model.state_dict(), "backbone": backbone,
                 "tables": tables.to_dict(), "temperatures": list(temperatures),
                 "image_size": image_size, "mean": mean, "std": std, "info": info,
                 "offset_head": model.offsets is not None, "head_hidden": model.head_hidden,
                 "location": decisions.get("location", {"method": "centroid"}),
                 "calibration": decisions.get("calibration", []),
                 "retrieval": decisions.get("retrieval")}, path)


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
    model = build_model(saved["backbone"], tables.num_classes, image_size=int(saved["image_size"]),
                        offset_head=bool(saved.get("offset_head", False)),
                        head_hidden=saved.get("head_hidden"))
    model.load_state_dict(saved["state_dict"])
    model.to(device).eval()
    return ModelBundle(model, tables, list(saved["temperatures"]), int(saved["image_size"]),
                       tuple(saved["mean"]), tuple(saved["std"]), dict(saved.get("info", {})),
                       dict(saved.get("location") or {"method": "weighted_mean"}),
                       list(saved.get("calibration") or []),
                       RetrievalIndex.from_dict(saved["retrieval"]) if saved.get("retrieval")
                       else None)
