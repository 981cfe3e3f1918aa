"""A finished run's files: ``model.pt``, ``train_image_ids.parquet`` and ``model_card.json``.

The card is written here once, at the end of training, with every key of
``geo_assets.model_card`` (the Dagster run id arrives as the ``--dagster-run-id`` flag); nothing
re-opens it afterwards. The Dagster asset builds its metadata from the card.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from geo_assets import layout
from geo_assets import model_card as mc
from geo_assets.storage import atomic_path, sha256_file, write_json_atomic
from training.bundle import save_bundle


def write_image_ids(path: Path, ids: set[str]) -> None:
    with atomic_path(path) as tmp:
        pq.write_table(pa.table({"image_id": pa.array(sorted(ids), pa.string())}), tmp)


def data_root_of(descriptor_path: Path) -> Path:
    """The data root that holds a dataset descriptor (``<root>/datasets/dataset.json``)."""
    folder = descriptor_path.parent
    return folder.parent if folder.name == layout.DATASETS_DIR else folder


def train_shards(desc) -> list[dict]:
    """The train split's shard entries from the shard index (name, fold, count, sha256)."""
    import json

    index = desc.path.parent / layout.SHARD_INDEX
    entries = json.loads(index.read_text())["shards"] if index.exists() else []
    return [e for e in entries if e.get("split") == "train"]


def cell_versions(descriptor_path: Path) -> tuple[list[dict], str | None]:
    """The exact per-cell manifest versions the dataset was built from, as sorted rows
    ``{cell_id, source, version}`` (Dagster keeps only the latest partition's version), and
    the table's SHA-256."""
    path = data_root_of(descriptor_path) / layout.CELL_VERSIONS
    if not path.exists():
        return [], None
    rows = pq.ParquetFile(path).read(columns=["cell_id", "source", "version"]).to_pylist()
    return sorted(rows, key=lambda r: (r["source"], r["cell_id"])), sha256_file(path)


def write_outputs(rt, state, temperatures: list[float], val_metrics: list[dict],
                  seconds: float, decisions: dict | None = None) -> dict:
    """Rank 0 only: model.pt, the training image ids and the model card; returns the card."""
    out = Path(rt.cfg.output_dir)
    descriptor = rt.info.raw
    info = {mc.RUN_NAME: rt.cfg.run_name, mc.CONFIG_HASH: rt.cfg.hash(),
            mc.TABLES_VERSION: rt.tables.version(),
            mc.MANIFEST_SHA256: str(descriptor.get("manifest_hash", ""))}
    model_path = out / layout.MODEL_FILE
    save_bundle(model_path, rt.bare, rt.cfg.backbone, rt.tables, temperatures,
                rt.cfg.image_size, info, decisions)
    write_image_ids(out / layout.TRAIN_IDS_FILE, state.seen_ids)
    versions, versions_sha = cell_versions(rt.info.path)
    card = {
        **info, mc.CREATED_AT: datetime.now(UTC).isoformat(timespec="seconds"),
        mc.CONFIG: rt.cfg.to_dict(), mc.MODEL_PATH: str(model_path),
        mc.MODEL_SHA256: sha256_file(model_path), mc.DATASET: str(rt.info.path),
        mc.SHARDS: train_shards(rt.info), mc.SPLIT: descriptor.get("splits"),
        mc.LEVELS: list(rt.tables.level_ids), mc.CELL_VERSIONS: versions,
        mc.CELL_VERSIONS_SHA256: versions_sha, mc.TRAIN_IMAGE_IDS: layout.TRAIN_IDS_FILE,
        mc.N_TRAIN_IMAGES: len(state.seen_ids), mc.DAGSTER_RUN_ID: rt.cfg.dagster_run_id,
        mc.EPOCHS_RUN: state.epoch, mc.STEPS: state.global_step,
        mc.BEST_EPOCH: state.best_epoch, mc.STOPPED_EARLY: state.stopped_early,
        mc.TRAIN_SECONDS: round(seconds, 1), mc.WORLD_SIZE: rt.dist.world_size,
        mc.DEVICE: str(rt.dist.device), mc.TEMPERATURES: temperatures,
        mc.VALIDATION: val_metrics, mc.HISTORY: state.history,
        mc.CALIBRATION: (decisions or {}).get("calibration"),
        mc.LOCATION: (decisions or {}).get("location"),
    }
    write_json_atomic(out / layout.MODEL_CARD_FILE, card)
    return card
