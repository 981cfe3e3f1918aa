"""Jobs: asset selections by group (constants) and by the per-cell ingestion assets."""

from __future__ import annotations

import dagster as dg

from pipeline.assets.ingest import CELL_ASSETS, image_manifest
from pipeline.constants import DATASET, EVAL, GPU_TAG, GRID, TRAIN

# The land-filtered grid; new cells in it are registered by the crawl-cells sensor.
grid_job = dg.define_asset_job(
    "grid_job", selection=dg.AssetSelection.groups(GRID),
    description="Rebuild the land polygons and the grid for the configured region and level.")

# Every source for a batch of crawl cells (partition range tags select the cells).
ingest_cells_job = dg.define_asset_job(
    "ingest_cells_job", selection=dg.AssetSelection.assets(*CELL_ASSETS),
    description="Fetch, check, filter and store the images of a batch of crawl cells.")

# The merged manifest and the datasets built from it.
dataset_job = dg.define_asset_job(
    "dataset_job",
    selection=dg.AssetSelection.assets(image_manifest) | dg.AssetSelection.groups(DATASET),
    description="Merge the cell manifests and rebuild hierarchy, splits and shards.",
    # Lightweight steps (seconds each): one process for the whole run instead of one per
    # step, so a dataset build costs seconds of orchestration, not minutes. The
    # multiprocess executor still works (select it in the launchpad's run config).
    executor_def=dg.in_process_executor)


def training_job():
    """Train and evaluate a model (runs carry the gpu tag: one at a time per instance)."""
    return dg.define_asset_job(
        "training_job", selection=dg.AssetSelection.groups(TRAIN, EVAL), tags=GPU_TAG,
        description="Train a model on the current shards and evaluate it on the test split.")
