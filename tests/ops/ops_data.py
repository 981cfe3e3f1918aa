"""A small but complete data root for the ops tests, written through ``DataRoot`` so the same
builder fills a local folder or an ``s3://`` root: raw images, per-cell manifests, the merged
manifest, cell versions, splits, real WebDataset shards (geo_assets.shards) with their index
and contents table, the dataset descriptor, and two models with cards (every key of
geo_assets.model_card, in the shape training writes) and training-image lists. Paths come
from geo_assets.layout."""

from __future__ import annotations

import hashlib
import io
import json
import socket
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from geo_assets import layout
from geo_assets import model_card as mc
from geo_assets.manifest import CELL_VERSIONS_SCHEMA, rows_to_table, table_to_parquet_bytes
from geo_assets.settings import ShardSettings
from geo_assets.shards import build_shards
from geo_assets.storage import DataRoot

CELLS = ("0312", "0313", "2130")  # the last one is the test split
SPLIT_SETTINGS = {"k_folds": 2, "test_fraction": 0.3, "seed": 42}
CREATED_AT = "2026-11-21T22:00:00Z"


@dataclass
class Built:
    root: DataRoot
    rows: list[dict]
    manifest_sha256: str
    shards: dict[str, list[str]] = field(default_factory=dict)  # shard name -> image ids
    models: dict[str, list[str]] = field(default_factory=dict)  # model -> train image ids


def free_port() -> int:
    """A free TCP port on loopback (for the servers the tests start)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def jpeg(seed: int, size: int = 32) -> bytes:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=80)
    return buf.getvalue()


def parquet_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def _rows(root: DataRoot, n_per_cell: int) -> list[dict]:
    rows = []
    for c, cell in enumerate(CELLS):
        for i in range(n_per_cell):
            sha, _ = root.put_image(jpeg(c * 100 + i))
            kept = i != n_per_cell - 1  # the last image of every cell is dropped
            rows.append({
                "image_id": f"mapillary:{cell}{i:03d}", "source": "mapillary",
                "source_id": f"{cell}{i:03d}", "group_id": f"seq-{cell}-{i // 2}",
                "lat_deg": 10.0 + c + i / 100, "lon_deg": 20.0 + c, "is_pano": False,
                "cell_id": cell, "sha256": sha, "width": 32, "height": 32,
                "brightness": 120.0, "kept": kept, "drop_reason": None if kept else "too_dark",
                "license": "CC BY-SA 4.0", "attribution": "tester",
            })
    return rows


def _write_manifests(root: DataRoot, rows: list[dict]) -> str:
    versions = []
    for cell in CELLS:
        cell_rows = [r for r in rows if r["cell_id"] == cell]
        data = table_to_parquet_bytes(rows_to_table(cell_rows))
        root.write_bytes(layout.cell_manifest("mapillary", cell), data)
        root.write_bytes(layout.cell_stats("mapillary", cell),
                         json.dumps({"n": len(cell_rows)}).encode())
        versions.append({"cell_id": cell, "source": "mapillary",
                         "version": hashlib.sha256(data).hexdigest(),
                         "n_rows": len(cell_rows), "n_kept": sum(r["kept"] for r in cell_rows)})
    root.write_bytes(layout.CELL_VERSIONS, parquet_bytes(
        pa.Table.from_pylist(versions, schema=CELL_VERSIONS_SCHEMA)))
    manifest = table_to_parquet_bytes(rows_to_table(rows))
    root.write_bytes(layout.IMAGE_MANIFEST, manifest)
    return hashlib.sha256(manifest).hexdigest()


def _write_shards(root: DataRoot, table: pl.DataFrame) -> dict[str, list[str]]:
    """Real shards built in a staging folder from the images in the root (read back through
    their URLs), then published into the root file by file, the index last."""
    with tempfile.TemporaryDirectory(prefix="geoscout-shards-") as tmp:
        build = build_shards(table, [1], Path(tmp),
                             ShardSettings(image_size=16, shard_size=100, workers=1))
        files = sorted(p for p in Path(tmp).iterdir() if p.name != layout.SHARD_INDEX_FILE)
        for path in [*files, Path(tmp) / layout.SHARD_INDEX_FILE]:
            root.write_bytes(_in_shards(path.name), path.read_bytes())
    assert not build.failed_image_ids, build.failed_image_ids
    out: dict[str, list[str]] = {}
    for row in build.contents.sort("image_id").iter_rows(named=True):
        out.setdefault(row["shard"], []).append(row["image_id"])
    return out


def _write_dataset(root: DataRoot, built: Built) -> None:
    records = []
    for r in (r for r in built.rows if r["kept"]):
        test = r["cell_id"] == CELLS[-1]
        records.append({
            **{k: r[k] for k in ("image_id", "sha256", "lat_deg", "lon_deg", "source",
                                 "group_id", "license", "attribution")},
            "source_path": root.uri(layout.image(r["sha256"])),
            "split": "test" if test else "train",
            "fold": -1 if test else int(r["source_id"][-1]) % 2,
            "cell_1": r["cell_id"][:1], "label_1": int(r["cell_id"][:1])})
    table = pl.DataFrame(records)
    root.write_bytes(layout.in_datasets(layout.SPLITS), parquet_bytes(
        table.select("image_id", "group_id", "split", "fold").to_arrow()))
    built.shards = _write_shards(root, table)
    root.write_bytes(layout.in_datasets(layout.DESCRIPTOR), json.dumps({
        "levels": [1], "manifest_hash": built.manifest_sha256,
        "shard_index": layout.SHARD_INDEX, "created_at": CREATED_AT, "splits": SPLIT_SETTINGS,
    }).encode())


def _in_shards(name: str) -> str:
    return layout.in_datasets(f"{layout.SHARDS_DIR}/{name}")


def _card(root: DataRoot, built: Built, run: str, n_train: int, run_id: str | None) -> dict:
    """A model card with exactly the keys training writes (geo_assets.model_card)."""
    versions = pq.read_table(io.BytesIO(root.read_bytes(layout.CELL_VERSIONS)))
    index = json.loads(root.read_bytes(_in_shards(layout.SHARD_INDEX_FILE)))
    folder = layout.model_dir(run)
    return {
        mc.RUN_NAME: run, mc.CREATED_AT: CREATED_AT,
        mc.CONFIG: {"epochs": 1, "lr": 0.001, "batch_size": 8}, mc.CONFIG_HASH: "c0ffee",
        mc.TABLES_VERSION: "t1", mc.MANIFEST_SHA256: built.manifest_sha256,
        mc.MODEL_PATH: root.uri(f"{folder}/{layout.MODEL_FILE}"), mc.MODEL_SHA256: "0" * 64,
        mc.DATASET: root.uri(layout.in_datasets(layout.DESCRIPTOR)),
        mc.SHARDS: [{k: s[k] for k in ("name", "split", "fold", "count", "sha256")}
                    for s in index["shards"] if s["split"] == "train"],
        mc.SPLIT: SPLIT_SETTINGS, mc.LEVELS: [1],
        mc.CELL_VERSIONS: versions.select(["cell_id", "source", "version"]).to_pylist(),
        mc.CELL_VERSIONS_SHA256: hashlib.sha256(root.read_bytes(layout.CELL_VERSIONS)).hexdigest(),
        mc.TRAIN_IMAGE_IDS: layout.TRAIN_IDS_FILE, mc.N_TRAIN_IMAGES: n_train,
        mc.DAGSTER_RUN_ID: run_id, mc.EPOCHS_RUN: 1, mc.STEPS: 4, mc.BEST_EPOCH: 0,
        mc.STOPPED_EARLY: False, mc.TRAIN_SECONDS: 1.5, mc.WORLD_SIZE: 1, mc.DEVICE: "cpu",
        mc.TEMPERATURES: [1.0], mc.VALIDATION: [{"top1": 0.5}], mc.HISTORY: [],
        mc.CALIBRATION: [{"temperature": 1.0, "fitted": False}],
        mc.LOCATION: {"method": "centroid"}, mc.FROZEN_ENCODER: None,
    }


def write_model(root: DataRoot, built: Built, run: str, train_ids: list[str],
                run_id: str | None = None) -> dict:
    card = _card(root, built, run, len(train_ids), run_id)
    folder = layout.model_dir(run)
    root.write_bytes(f"{folder}/{layout.MODEL_CARD_FILE}", json.dumps(card).encode())
    root.write_bytes(f"{folder}/{layout.TRAIN_IDS_FILE}",
                     parquet_bytes(pa.table({"image_id": sorted(train_ids)})))
    built.models[run] = sorted(train_ids)
    return card


def build(root: DataRoot, n_per_cell: int = 5) -> Built:
    rows = _rows(root, n_per_cell)
    built = Built(root=root, rows=rows, manifest_sha256=_write_manifests(root, rows))
    _write_dataset(root, built)
    train = sorted(i for name, ids in built.shards.items() if name.startswith("train")
                   for i in ids)
    write_model(root, built, "run-a", train, run_id="11111111-aaaa")
    write_model(root, built, "run-b", train[: len(train) // 2])
    return built
