"""The data root's layout: every relative path geoscout reads or writes, named once.

Every other module builds data-root paths from these names (with ``DataRoot.path`` /
``DataRoot.local_path`` / ``Path /``), never from string literals, so the layout can be read
(and changed) here alone::

    land/land_polygons.parquet          the region's land (land_polygons)
    land/<natural earth files>          cached Natural Earth downloads
    grid/grid_cells.parquet             the land-filtered grid (GeoParquet)
    grid/grid_map.html, grid_preview.png
    plan/crawl_plan.parquet, .json, .png   the crawl plan: cells, coverage, budgets
    images/ab/cd/<sha256>.<ext>         raw images, content-addressed, written once
    manifests/cells/<source>/<cell>.parquet      one manifest per crawl cell and source
    manifests/cells/<source>/<cell>.stats.json   written last: the cell is done
    manifests/cells/<source>/<cell>.journal.jsonl   resume journal of a cell in progress
    manifests/cells/<source>/<cell>.failed.json     a failed cell's retry state
    manifests/cells/local/folder.parquet (+ .stats.json)  the local folder's photos that no
                                        crawled cell holds (geo_assets/local_index.py)
    manifests/local/folder_index.parquet   the local folder's parsed photos (index cache)
    manifests/image_manifest.parquet    the merged manifest
    manifests/cell_versions.parquet     per-cell manifest versions (lineage)
    datasets/                           splits, hierarchy, shards (names below)
    datasets/embeddings/<backbone>-<key>.pt   frozen-encoder embedding caches
    models/<run>/                       checkpoints, model.pt, model_card.json
    reports/<run>/                      evaluation report, metrics.json, figures

Paths *inside* ``datasets/`` are relative to it (the dataset descriptor stores them that way,
so a dataset folder can be moved or mounted elsewhere); paths inside a model run folder and a
report folder are relative to those folders.
"""

from __future__ import annotations

# --- grid ------------------------------------------------------------------------------------
LAND_DIR = "land"
LAND_POLYGONS = f"{LAND_DIR}/land_polygons.parquet"
GRID_DIR = "grid"
GRID_CELLS = f"{GRID_DIR}/grid_cells.parquet"
GRID_MAP = f"{GRID_DIR}/grid_map.html"
GRID_PREVIEW = f"{GRID_DIR}/grid_preview.png"
CHECKSUM_SUFFIX = ".sha256"  # a cached download's recorded SHA-256 sits next to it


def natural_earth_zip(stem: str) -> str:
    """A cached Natural Earth download, e.g. ``land/ne_50m_land.zip``."""
    return f"{LAND_DIR}/{stem}.zip"

# --- crawl plan (density-adaptive cells and budgets; geo_assets.plan) ----------------------------
PLAN_DIR = "plan"
CRAWL_PLAN = f"{PLAN_DIR}/crawl_plan.parquet"      # cell_id, level, crawl_cell, coverage, images..
CRAWL_PLAN_SUMMARY = f"{PLAN_DIR}/crawl_plan.json"  # settings and the dry run's figures
CRAWL_PLAN_PNG = f"{PLAN_DIR}/crawl_plan.png"      # the plan's cells coloured by budget


def request_usage(source: str, day: str) -> str:
    """Requests per endpoint class that a source used on a UTC day (request budgets)."""
    return f"{PLAN_DIR}/usage/{source}/{day}.json"

# --- images and manifests -----------------------------------------------------------------------
IMAGES_DIR = "images"
MANIFESTS_DIR = "manifests"
CELLS_DIR = f"{MANIFESTS_DIR}/cells"
IMAGE_MANIFEST = f"{MANIFESTS_DIR}/image_manifest.parquet"
CELL_VERSIONS = f"{MANIFESTS_DIR}/cell_versions.parquet"
MERGE_STATE = f"{MANIFESTS_DIR}/merge_state.json"  # per cell file: what the last merge decided
CELL_MANIFEST_SUFFIX = ".parquet"
CELL_STATS_SUFFIX = ".stats.json"
CELL_JOURNAL_SUFFIX = ".journal.jsonl"
COVERAGE_MAP = f"{MANIFESTS_DIR}/coverage.png"  # the merged manifest's images on a map


def image(sha256: str, ext: str = "jpg") -> str:
    """Content-addressed raw image: ``images/ab/cd/<sha256>.<ext>``."""
    return f"{IMAGES_DIR}/{sha256[:2]}/{sha256[2:4]}/{sha256}.{ext}"


def cell_manifest(source: str, cell_id: str) -> str:
    return f"{CELLS_DIR}/{source}/{cell_id}{CELL_MANIFEST_SUFFIX}"


def cell_stats(source: str, cell_id: str) -> str:
    return f"{CELLS_DIR}/{source}/{cell_id}{CELL_STATS_SUFFIX}"


# the local folder's photos in no crawled cell: a cell-like part that the merge picks up
FOLDER_PART = "folder"
# the local folder's parsed photos (EXIF or sidecar), reused while the folder is unchanged
LOCAL_FOLDER_INDEX = f"{MANIFESTS_DIR}/local/folder_index.parquet"


def folder_part(source: str) -> tuple[str, str]:
    """(manifest, stats) of a source's folder part (``geo_assets.local_index``)."""
    return cell_manifest(source, FOLDER_PART), cell_stats(source, FOLDER_PART)


CELL_FAILURE_SUFFIX = ".failed.json"


def cell_failure(source: str, cell_id: str) -> str:
    """The cell's last failure (attempts, error, next retry); removed once it succeeds."""
    return f"{CELLS_DIR}/{source}/{cell_id}{CELL_FAILURE_SUFFIX}"


def cell_journal(source: str, cell_id: str) -> str:
    return f"{CELLS_DIR}/{source}/{cell_id}{CELL_JOURNAL_SUFFIX}"


# --- datasets (relative to DATASETS_DIR) --------------------------------------------------------
DATASETS_DIR = "datasets"
DESCRIPTOR = "dataset.json"
SPLITS = "splits.parquet"
SPLITS_META = "splits.json"
SPLITS_EXCLUDED = "splits_excluded.parquet"
HIERARCHY_DIR = "hierarchy"
LABELS_FILE = "labels.parquet"  # inside HIERARCHY_DIR
LEVELS_META_FILE = "levels.json"  # inside HIERARCHY_DIR
LABELS = f"{HIERARCHY_DIR}/{LABELS_FILE}"
LEVELS_META = f"{HIERARCHY_DIR}/{LEVELS_META_FILE}"
SHARDS_DIR = "shards"
SHARD_INDEX_FILE = "index.json"  # inside SHARDS_DIR
SHARD_CONTENTS_FILE = "contents.parquet"  # inside SHARDS_DIR
SHARD_INDEX = f"{SHARDS_DIR}/{SHARD_INDEX_FILE}"
SHARD_CONTENTS = f"{SHARDS_DIR}/{SHARD_CONTENTS_FILE}"
DATASET_REPORTS_DIR = "reports"
DATASET_CARD = "README.md"  # the dataset card (Hugging Face style), beside shards/
ATTRIBUTION = "attribution.csv"  # every (source, licence, attribution) with its image count


def level_table_file(level: int) -> str:
    """Class table of one level, inside HIERARCHY_DIR."""
    return f"level_{level}.parquet"


def children_file(level: int) -> str:
    """Parent -> children map of one level, inside HIERARCHY_DIR."""
    return f"children_{level}.json"


def level_table(level: int) -> str:
    return f"{HIERARCHY_DIR}/{level_table_file(level)}"


def children_map(level: int) -> str:
    return f"{HIERARCHY_DIR}/{children_file(level)}"


EMBEDDINGS_DIR = "embeddings"  # inside DATASETS_DIR: frozen-encoder caches (training.embeddings)


def embedding_cache(backbone: str, key: str) -> str:
    """A frozen backbone's cached embeddings of a dataset, inside DATASETS_DIR:
    ``embeddings/<backbone>-<key>.pt`` (``key`` covers what changes the embeddings)."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in backbone)
    return f"{EMBEDDINGS_DIR}/{safe}-{key}.pt"


def dataset_level(level: int) -> str:
    """Summary of the level-``level`` dataset asset."""
    return f"dataset_level_{level}.json"


def shard_file(name: str) -> str:
    """A shard tar, inside SHARDS_DIR."""
    return f"{name}.tar"


def shard_stats_file(name: str) -> str:
    """A shard's statistics, inside SHARDS_DIR; written last, so it marks the shard done."""
    return f"{name}.stats.json"


def in_datasets(relpath: str) -> str:
    """A path inside ``datasets/`` as a path relative to the data root."""
    return f"{DATASETS_DIR}/{relpath}"


# --- models and reports ---------------------------------------------------------------------------
MODELS_DIR = "models"
REPORTS_DIR = "reports"
MODEL_FILE = "model.pt"  # inside a model run folder
MODEL_CARD_FILE = "model_card.json"
MODEL_CARD_MD_FILE = "MODEL_CARD.md"
TRAIN_IDS_FILE = "train_image_ids.parquet"
CHECKPOINT_FILE = "checkpoint.pth"
PREVIOUS_CHECKPOINT_FILE = "checkpoint.prev.pth"  # the one before, kept for resume fallback
BEST_FILE = "best.pth"
METRICS_FILE = "metrics.json"  # inside a report folder
REPORT_HTML_FILE = "report.html"
EXPORT_DIR = "export"  # inside a model run folder (training.export)
HPO_DIR = "hpo"  # inside a model run folder: study.db, study.json, trials/<n>/ (training.hpo)


def model_dir(run_name: str) -> str:
    return f"{MODELS_DIR}/{run_name}"


def report_dir(run_name: str) -> str:
    return f"{REPORTS_DIR}/{run_name}"


# --- figures and maps (added with the plotting move into geo_assets.plots / mapviz) ------------
# inside DATASETS_DIR/DATASET_REPORTS_DIR
LEAKAGE_FIGURE_FILE = "leakage.png"
CLASS_HISTOGRAM_FILE = "class_histogram.png"


def classes_map_file(level: int) -> str:
    """HTML map of one level's classes, inside DATASET_REPORTS_DIR."""
    return f"classes_level_{level}.html"


def classes_png_file(level: int) -> str:
    """Static PNG map of one level's classes, inside DATASET_REPORTS_DIR."""
    return f"classes_level_{level}.png"


def level_histogram_file(level: int) -> str:
    """Training images per class of one level, inside DATASET_REPORTS_DIR."""
    return f"class_histogram_level_{level}.png"


# inside a report folder (beside METRICS_FILE and REPORT_HTML_FILE)
ERROR_HISTOGRAM_FILE = "error_histogram.png"
RELIABILITY_FILE = "reliability.png"
CONFUSION_FILE = "confusion.png"
GRADCAM_FILE = "gradcam.png"
PREDICTIONS_MAP_FILE = "map.html"
PREDICTIONS_PNG_FILE = "map.png"  # the same predictions as a static map (no network)
EMBEDDINGS_FILE = "embeddings.png"
