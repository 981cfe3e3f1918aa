"""The keys of ``model_card.json``, defined once.

Written by training (``training/outputs.py``) exactly once at the end of a run, with the
Dagster run id passed in as a training flag; read by lineage (``geo_assets/lineage.py``) and
the Dagster ``trained_model`` asset. Readers use these names only: a card is read as written.
"""

from __future__ import annotations

RUN_NAME = "run_name"
CREATED_AT = "created_at"
CONFIG = "config"
CONFIG_HASH = "config_hash"
TABLES_VERSION = "tables_version"
MANIFEST_SHA256 = "manifest_sha256"
MODEL_PATH = "model_path"
MODEL_SHA256 = "model_sha256"
DATASET = "dataset"
SHARDS = "shards"
SPLIT = "split"
LEVELS = "levels"
CELL_VERSIONS = "cell_versions"
CELL_VERSIONS_SHA256 = "cell_versions_sha256"
TRAIN_IMAGE_IDS = "train_image_ids"  # file name inside the model folder
N_TRAIN_IMAGES = "n_train_images"
DAGSTER_RUN_ID = "dagster_run_id"  # None when trained outside Dagster
EPOCHS_RUN = "epochs_run"
STEPS = "steps"
BEST_EPOCH = "best_epoch"
STOPPED_EARLY = "stopped_early"
TRAIN_SECONDS = "train_seconds"
WORLD_SIZE = "world_size"
DEVICE = "device"
TEMPERATURES = "temperatures"
VALIDATION = "validation"
HISTORY = "history"
CALIBRATION = "calibration"  # per level: temperature, fitted or why not
LOCATION = "location"  # location estimator chosen on validation, its validation median km
FROZEN_ENCODER = "frozen_encoder"  # --encoder frozen: the embedding cache, seconds per epoch
