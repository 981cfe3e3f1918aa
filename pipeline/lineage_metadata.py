"""A model's lineage as Dagster metadata: what ``geoscout lineage model`` prints
(geo_assets.lineage_cli), for the model's materialization in the UI."""

from __future__ import annotations

from typing import Any

import dagster as dg

from geo_assets import layout
from geo_assets import lineage as lin
from geo_assets.lineage_cli import short
from geo_assets.storage import DataRoot


def model_lineage_metadata(root: DataRoot | str, model: str) -> dict[str, Any]:
    """Manifest hash, cell and shard counts, training images by source, split settings, the
    card's location and the Dagster run that made the model."""
    item = lin.model_lineage(root, model)
    root = lin.as_root(root)
    shards = [s.get("name", "?") for s in item.shards]
    card = root.uri(f"{item.path}/{layout.MODEL_CARD_FILE}")
    md: dict[str, Any] = {
        "lineage/manifest_hash": dg.MetadataValue.text(item.manifest_sha256 or "unknown"),
        "lineage/n_cells": dg.MetadataValue.int(len(item.cell_versions)),
        "lineage/shards": dg.MetadataValue.json({"count": len(shards), "names": shards}),
        "lineage/n_train_images": dg.MetadataValue.int(item.n_train_images or 0),
        "lineage/images_by_source": dg.MetadataValue.json(item.sources),
        "lineage/split_settings": dg.MetadataValue.json(item.split or {}),
        "lineage/model_card": dg.MetadataValue.path(card),
        "lineage/summary": dg.MetadataValue.md(
            f"Model **{item.name}** trained on {item.n_train_images or 0} images "
            f"from manifest `{short(item.manifest_sha256)}` ({len(item.cell_versions)} cells, "
            f"{len(shards)} shards). Details: `geoscout lineage model {item.name}`."),
    }
    if item.dagster_run_id:
        md["lineage/dagster_run"] = dg.MetadataValue.dagster_run(item.dagster_run_id)
    return md
