"""Where a model's training data came from, as far as a reader of ``model.pt`` can tell:
whether it was trained on the synthetic demo world (its figures then say nothing about real
photos, and ``predict`` and the report say so), and which location estimator it chose."""

from __future__ import annotations

import json
import posixpath
from pathlib import Path

DEMO_WORLD_MARKER = "demo_world.json"  # written at the data root by `geoscout demo`
DEMO_INFO_KEYS = ("demo_world", "world", "profile")
# estimate_locations' methods (training/inference.py LOCATION_METHODS) and the older names
LOCATIONS = ("top1", "weighted", "centroid", "weighted_mean", "regression", "retrieval",
             "density")
LOCATION_INFO_KEYS = ("location_estimator", "location")


def recorded_location(info: dict, location: dict | None = None) -> str:
    """The location estimator chosen on the validation fold and recorded in model.pt
    (``location``, else its info), else the top cell's centroid (a weighted mean of far-apart
    cells can land in between)."""
    if isinstance(location, dict) and location.get("method") in LOCATIONS:
        return str(location["method"])
    for key in LOCATION_INFO_KEYS:
        value = info.get(key)
        if isinstance(value, dict):
            value = value.get("method") or value.get("name")
        if value in LOCATIONS:
            return str(value)
    return "top1"


def trained_on_demo_world(model_path: str | Path, info: dict) -> bool:
    """True when model.pt's info says so, or its data root (models/<run>/model.pt, two
    folders up) or the dataset named in its model card holds the demo world's marker. Paths
    and fsspec URLs (``s3://...``) alike."""
    if any("demo" in str(info.get(k, "")).lower() for k in DEMO_INFO_KEYS if info.get(k)):
        return True
    folder = posixpath.dirname(_absolute(model_path))
    roots = [posixpath.dirname(posixpath.dirname(folder))]
    try:
        dataset = json.loads(_read_text(f"{folder}/model_card.json")).get("dataset") or ""
    except (OSError, ValueError):
        dataset = ""
    if dataset:  # <root>/datasets/dataset.json
        roots.append(posixpath.dirname(posixpath.dirname(_absolute(dataset))))
    return any(_is_file(f"{root}/{DEMO_WORLD_MARKER}") for root in roots)


def _absolute(location: str | Path) -> str:
    text = str(location)
    return text if "://" in text else Path(text).resolve().as_posix()


def _read_text(location: str) -> str:
    import fsspec

    with fsspec.open(location, "rt") as f:
        return f.read()


def _is_file(location: str) -> bool:
    import fsspec

    try:
        fs, path = fsspec.core.url_to_fs(location)
        return fs.isfile(path)
    except (OSError, ValueError):
        return False
