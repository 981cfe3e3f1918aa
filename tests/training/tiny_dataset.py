"""A tiny hierarchical dataset written per docs/architecture.md with webdataset directly:
2 levels (4 classes at level 1, 8 at level 2), colour-coded JPEGs that a small CNN learns in
seconds, train folds 0-1 and a test split."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import webdataset as wds
from PIL import Image

from geo_assets.cells import cell_center, children

LEVEL1 = ["0", "1", "2", "3"]
LEVEL2 = [c for p in LEVEL1 for c in children(p)[:2]]  # two children per parent
COLOURS = np.array([[220, 40, 40], [40, 200, 40], [40, 40, 220], [220, 220, 40],
                    [200, 40, 200], [40, 200, 200], [240, 140, 20], [120, 120, 120]])


def jpeg(colour: np.ndarray, rng: np.random.Generator, size: int) -> bytes:
    pixels = np.clip(colour + rng.normal(0, 25, (size, size, 3)), 0, 255).astype(np.uint8)
    half = size // 2
    pixels[:half, :half] = 255 - pixels[:half, :half]  # some structure besides colour
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def write_levels(root: Path) -> None:
    (root / "hierarchy").mkdir(parents=True)
    for level, ids, parents in ((1, LEVEL1, [-1] * 4), (2, LEVEL2, [i // 2 for i in range(8)])):
        centres = [cell_center(c) for c in ids]
        pq.write_table(pa.table({
            "class_index": list(range(len(ids))), "cell_id": ids, "n_images": [10] * len(ids),
            "n_train": [8] * len(ids), "centroid_lat_deg": [c[0] for c in centres],
            "centroid_lon_deg": [c[1] for c in centres], "parent_class_index": parents,
        }), root / "hierarchy" / f"level_{level}.parquet")


def sample(k: int, cls2: int, split: str, fold: int, rng, size: int,
           colour: int | None = None) -> dict:
    lat, lon = cell_center(LEVEL2[cls2])
    lat, lon = lat + rng.uniform(-5, 5), lon + rng.uniform(-5, 5)
    image_id = f"local:{split}{fold}-{k}"
    key = hashlib.sha256(image_id.encode()).hexdigest()[:20]
    meta = {"image_id": image_id, "lat_deg": lat, "lon_deg": lon, "source": "local",
            "group_id": image_id, "license": "test", "attribution": "test", "split": split,
            "fold": fold, "cells": {"1": LEVEL1[cls2 // 2], "2": LEVEL2[cls2]},
            "labels": {"1": cls2 // 2, "2": cls2}}
    return {"__key__": key, "jpg": jpeg(COLOURS[cls2 if colour is None else colour], rng, size), "json": json.dumps(meta)}


def write_shards(root: Path, per_class: int, seed: int, size: int,
                 shuffle_train: bool = False) -> list[dict]:
    rng = np.random.default_rng(seed)
    shards_dir = root / "shards"
    shards_dir.mkdir()
    index = []
    for split, fold in (("train", 0), ("train", 1), ("test", -1)):
        for part in range(2):
            name = f"{split}-{'t' if fold < 0 else fold}-{part:06d}"
            with wds.TarWriter(str(shards_dir / f"{name}.tar")) as sink:
                for k in range(per_class * 8 // 2):
                    # shuffled: training images show a random class's colour (labels are noise)
                    colour = int(rng.integers(8)) if shuffle_train and split == "train" else None
                    sink.write(sample(part * 10_000 + k, k % 8, split, fold, rng, size, colour))
            index.append({"name": name, "split": split, "fold": fold,
                          "count": per_class * 4, "sha256": ""})
    return index


def build_tiny_dataset(root: Path, per_class: int = 8, seed: int = 0, size: int = 40,
                       shuffle_train: bool = False) -> Path:
    """Write the dataset under ``root``; returns the path of dataset.json. ``shuffle_train``:
    training images unrelated to their labels (the test split stays true)."""
    root.mkdir(parents=True, exist_ok=True)
    write_levels(root)
    index = write_shards(root, per_class, seed, size, shuffle_train)
    (root / "shards" / "index.json").write_text(json.dumps(
        {"shards": index, "levels": [1, 2], "image_size": size}))
    descriptor = {"levels": [1, 2], "shard_index": "shards/index.json",
                  "level_files": {"1": "hierarchy/level_1.parquet",
                                  "2": "hierarchy/level_2.parquet"},
                  "num_classes": {"1": 4, "2": 8}, "manifest_hash": "tiny-manifest",
                  "image_size": size, "created_at": "2026-01-01T00:00:00Z"}
    (root / "dataset.json").write_text(json.dumps(descriptor))
    return root / "dataset.json"


def train_tiny_model(dataset_root: Path, out: Path) -> Path:
    """model.pt trained for two epochs on the tiny dataset under ``dataset_root``."""
    import torch

    from training.config import TrainConfig
    from training.train import main

    threads = torch.get_num_threads()
    main(TrainConfig(dataset=str(dataset_root / "datasets" / "dataset.json"),
                     output_dir=str(out), epochs=2, batch_size=8, workers=0, image_size=32,
                     device="cpu", threads=1, backbone="tiny", pretrained=False, lr=3e-3))
    torch.set_num_threads(threads)
    return out / "model.pt"
