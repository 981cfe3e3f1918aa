"""A finished run's files: ``model.pt``, ``train_image_ids.parquet`` and ``model_card.json``.

The card is written here once, at the end of training, with every key of
``geo_assets.model_card`` (the Dagster run id arrives as the ``--dagster-run-id`` flag); nothing
re-opens it afterwards. The Dagster asset builds its metadata from the card.
"""

from __future__ import annotations

import io
import json
import os
import posixpath
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from geo_assets import layout
from geo_assets import model_card as mc
from geo_assets.storage import (
    DataRoot,
    atomic_path,
    is_url,
    sha256_file,
    write_json_atomic,
)
from training.bundle import save_bundle

# Run folders on object storage staged by ``staged_run_dir``: output_dir URL -> (its root,
# the local folder this process writes in).
_STAGED: dict[str, tuple[DataRoot, Path]] = {}


@contextmanager
def staged_run_dir(cfg) -> Iterator[None]:
    """Let a run whose ``output_dir`` is an fsspec URL (``s3://.../models/<run>``) write in a
    local folder: its files are fetched first (so ``--resume auto`` finds the checkpoint),
    checkpoints are published as they are saved (``publish_checkpoint``), and rank 0 publishes
    the whole folder when the run ends cleanly. A local ``output_dir`` is used as it is."""
    if not is_url(cfg.output_dir):
        yield
        return
    root = DataRoot(cfg.output_dir.rstrip("/"))
    main = int(os.environ.get("RANK", "0")) == 0
    with root.staged([""], [""] if main else []) as local:
        _STAGED[cfg.output_dir] = (root, local)
        try:
            yield
        finally:
            _STAGED.pop(cfg.output_dir, None)


def run_dir(cfg) -> Path:
    """The local folder the run writes in: ``output_dir`` itself, or its stage."""
    staged = _STAGED.get(cfg.output_dir)
    return staged[1] if staged else Path(cfg.output_dir)


def publish_checkpoint(cfg) -> None:
    """Upload the run's checkpoints now when its folder is staged (a preempted pod then
    resumes from the bucket); nothing for a local folder."""
    staged = _STAGED.get(cfg.output_dir)
    if staged is None:
        return
    root, local = staged
    for name in (layout.PREVIOUS_CHECKPOINT_FILE, layout.CHECKPOINT_FILE):
        if (local / name).exists():
            root.fs.put_file(str(local / name), root.path(name))


def final_location(cfg, name: str) -> str:
    """Where a file of the run folder ends up (the URL when the folder is staged)."""
    if cfg.output_dir in _STAGED:
        return f"{cfg.output_dir.rstrip('/')}/{name}"
    return str(Path(cfg.output_dir) / name)


def write_image_ids(path: Path, ids) -> int:
    """Write the sorted unique ids; returns how many."""
    ids = sorted(set(ids))
    with atomic_path(path) as tmp:
        pq.write_table(pa.table({"image_id": pa.array(ids, pa.string())}), tmp)
    return len(ids)


def _shard_record_ids(url: str) -> list[str]:
    """The image ids in one shard's JSON records (when there is no contents table)."""
    import tarfile

    import fsspec

    with fsspec.open(url, "rb") as fh, tarfile.open(fileobj=fh, mode="r|") as tar:
        return [json.load(tar.extractfile(m))["image_id"] for m in tar
                if m.isfile() and m.name.endswith(".json")]


def _folder(location) -> DataRoot:
    """The folder holding ``location`` (a local path or an fsspec URL), as a ``DataRoot``."""
    return DataRoot(posixpath.dirname(str(location).rstrip("/")) or ".")


def _read_parquet(root: DataRoot, relpath: str, columns: list[str]) -> pa.Table:
    return pq.read_table(io.BytesIO(root.read_bytes(relpath)), columns=columns)


def training_image_ids(desc, folds: list[int]) -> list[str]:
    """The ids of the images in the training folds' shards: the pool the run sampled from
    (derived at the end instead of collected per batch, so checkpoints stay O(1)). Read from
    the shards' ``contents.parquet``, else from the shards' own records."""
    shards = desc.select("train", folds)
    if not shards:
        return []
    folder = _folder(shards[0].url)
    if folder.exists(layout.SHARD_CONTENTS_FILE):
        table = _read_parquet(folder, layout.SHARD_CONTENTS_FILE, ["image_id", "shard"])
        keep = pc.is_in(table["shard"], pa.array([s.name for s in shards], pa.string()))
        return table.filter(keep)["image_id"].to_pylist()
    return [i for s in shards for i in _shard_record_ids(s.url)]


def data_root_of(descriptor_path) -> DataRoot:
    """The data root that holds a dataset descriptor (``<root>/datasets/dataset.json``)."""
    folder = _folder(descriptor_path)
    if posixpath.basename(folder.url.rstrip("/")) == layout.DATASETS_DIR:
        return _folder(folder.url)
    return folder


def train_shards(desc) -> list[dict]:
    """The train split's shard entries from the shard index (name, fold, count, sha256)."""
    folder = _folder(desc.path)
    if not folder.exists(layout.SHARD_INDEX):
        return []
    entries = json.loads(folder.read_bytes(layout.SHARD_INDEX))["shards"]
    return [e for e in entries if e.get("split") == "train"]


def cell_versions(descriptor_path) -> tuple[list[dict], str | None]:
    """The exact per-cell manifest versions the dataset was built from, as sorted rows
    ``{cell_id, source, version}`` (Dagster keeps only the latest partition's version), and
    the table's SHA-256."""
    root = data_root_of(descriptor_path)
    if not root.exists(layout.CELL_VERSIONS):
        return [], None
    rows = _read_parquet(root, layout.CELL_VERSIONS, ["cell_id", "source", "version"])
    rows = rows.to_pylist()
    return (sorted(rows, key=lambda r: (r["source"], r["cell_id"])),
            root.sha256(layout.CELL_VERSIONS))


def write_outputs(rt, state, temperatures: list[float], val_metrics: list[dict],
                  seconds: float, folds: list[int], decisions: dict | None = None) -> dict:
    """Rank 0 only: model.pt, the training image ids (of ``folds``) and the model card;
    returns the card."""
    out = run_dir(rt.cfg)
    descriptor = rt.info.raw
    info = {mc.RUN_NAME: rt.cfg.run_name, mc.CONFIG_HASH: rt.cfg.hash(),
            mc.TABLES_VERSION: rt.tables.version(),
            mc.MANIFEST_SHA256: str(descriptor.get("manifest_hash", ""))}
    model_path = out / layout.MODEL_FILE
    save_bundle(model_path, rt.bare, rt.cfg.backbone, rt.tables, temperatures,
                rt.cfg.image_size, info, decisions)
    n_train = write_image_ids(out / layout.TRAIN_IDS_FILE, training_image_ids(rt.info, folds))
    versions, versions_sha = cell_versions(rt.info.path)
    card = {
        **info, mc.CREATED_AT: datetime.now(UTC).isoformat(timespec="seconds"),
        mc.CONFIG: rt.cfg.to_dict(), mc.MODEL_PATH: final_location(rt.cfg, layout.MODEL_FILE),
        mc.MODEL_SHA256: sha256_file(model_path), mc.DATASET: str(rt.info.path),
        mc.SHARDS: train_shards(rt.info), mc.SPLIT: descriptor.get("splits"),
        mc.LEVELS: list(rt.tables.level_ids), mc.CELL_VERSIONS: versions,
        mc.CELL_VERSIONS_SHA256: versions_sha, mc.TRAIN_IMAGE_IDS: layout.TRAIN_IDS_FILE,
        mc.N_TRAIN_IMAGES: n_train, mc.DAGSTER_RUN_ID: rt.cfg.dagster_run_id,
        mc.EPOCHS_RUN: state.epoch, mc.STEPS: state.global_step,
        mc.BEST_EPOCH: state.best_epoch, mc.STOPPED_EARLY: state.stopped_early,
        mc.TRAIN_SECONDS: round(seconds, 1), mc.WORLD_SIZE: rt.dist.world_size,
        mc.DEVICE: str(rt.dist.device), mc.TEMPERATURES: temperatures,
        mc.VALIDATION: val_metrics, mc.HISTORY: state.history,
        mc.CALIBRATION: (decisions or {}).get("calibration"),
        mc.LOCATION: (decisions or {}).get("location"),
        mc.FROZEN_ENCODER: (decisions or {}).get("frozen_encoder"),
    }
    write_json_atomic(out / layout.MODEL_CARD_FILE, card)
    return card
