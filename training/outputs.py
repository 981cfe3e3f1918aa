"""A finished run's files: ``model.pt``, ``model_card.json`` (lineage: manifest hash, shards,
settings, the exact training image ids) and ``train_image_ids.parquet``."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from geo_assets.storage import atomic_path
from training.bundle import save_bundle


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_json_atomic(path: Path, data: dict) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str))


def write_image_ids(path: Path, ids: set[str]) -> None:
    with atomic_path(path) as tmp:
        pq.write_table(pa.table({"image_id": pa.array(sorted(ids), pa.string())}), tmp)


def train_shards(desc) -> list[dict]:
    """The train split's shard entries from the shard index (name, fold, count, sha256)."""
    index = desc.path.parent / desc.raw.get("shard_index", "shards/index.json")
    entries = json.loads(index.read_text())["shards"] if index.exists() else []
    return [e for e in entries if e.get("split") == "train"]


def cell_versions_ref(descriptor_path: Path) -> dict | None:
    """Path and hash of the data root's per-cell version table (datasets/ is in the root)."""
    path = descriptor_path.parent.parent / "manifests" / "cell_versions.parquet"
    return {"path": str(path), "sha256": sha256_file(path)} if path.exists() else None


def cell_versions(descriptor_path: Path) -> list[dict]:
    """The exact per-cell manifest versions the dataset was built from, as sorted rows
    ``{cell_id, source, version}`` (Dagster keeps only the latest partition's version)."""
    path = descriptor_path.parent.parent / "manifests" / "cell_versions.parquet"
    if not path.exists():
        return []
    rows = pq.ParquetFile(path).read(columns=["cell_id", "source", "version"]).to_pylist()
    return sorted(rows, key=lambda r: (r["source"], r["cell_id"]))


def manifest_hash(descriptor_raw: dict) -> str:
    return str(descriptor_raw.get("manifest_hash", descriptor_raw.get("manifest_sha256", "")))


def headline(val_metrics: list[dict], levels: list[int], temperatures: list[float]) -> dict:
    out = {}
    for lv, m, t in zip(levels, val_metrics, temperatures):
        out[f"val_top1_level_{lv}"] = round(m["top1"], 4)
        out[f"temperature_level_{lv}"] = round(t, 4)
    return out


def write_outputs(rt, state, temperatures: list[float], val_metrics: list[dict],
                  seconds: float) -> dict:
    """Rank 0 only. Returns the model card, with Dagster-ready ``metadata``."""
    out = Path(rt.cfg.output_dir)
    levels = rt.tables.level_ids
    info = {"run_name": rt.cfg.run_name, "config_hash": rt.cfg.hash(),
            "tables_version": rt.tables.version(), "manifest_hash": manifest_hash(rt.info.raw)}
    save_bundle(out / "model.pt", rt.bare, rt.cfg.backbone, rt.tables, temperatures,
                rt.cfg.image_size, info)
    write_image_ids(out / "train_image_ids.parquet", state.seen_ids)
    shards = train_shards(rt.info)
    card = {
        **info, "model_path": str(out / "model.pt"), "model_sha256": sha256_file(out / "model.pt"),
        "dataset": str(rt.info.path), "shards": shards, "config": rt.cfg.to_dict(),
        "split_settings": rt.info.raw.get("split_settings", rt.info.raw.get("splits")),
        "cell_versions": cell_versions(rt.info.path),
        "cell_versions_table": cell_versions_ref(rt.info.path),
        "image_ids_file": str(out / "train_image_ids.parquet"), "n_train_images": len(state.seen_ids),
        "epochs_run": state.epoch, "steps": state.global_step, "best_epoch": state.best_epoch,
        "stopped_early": state.stopped_early, "train_seconds": round(seconds, 1),
        "world_size": rt.dist.world_size, "device": str(rt.dist.device),
        "temperatures": temperatures, "validation": val_metrics, "history": state.history,
    }
    card["metadata"] = {
        **headline(val_metrics, levels, temperatures), "model_path": card["model_path"],
        "model_sha256": card["model_sha256"], "manifest_hash": info["manifest_hash"],
        "n_train_images": len(state.seen_ids), "train_seconds": round(seconds, 1),
        "epochs_run": state.epoch, "best_epoch": state.best_epoch, "world_size": rt.dist.world_size,
        "config_hash": rt.cfg.hash(),
    }
    write_json_atomic(out / "model_card.json", card)
    return card
