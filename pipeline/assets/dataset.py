"""Dataset assets: splits, hierarchy, shards, and one dataset asset per hierarchy level.

Order: ``image_manifest`` -> ``splits`` -> ``hierarchy`` -> ``shards`` -> ``dataset_level_<L>``.
Splits come before the hierarchy because the classes are fitted on the training images only
(OSV-5M style); the splits stratify by the plain cells of the coarsest level, which need no
fitted classes. Files under ``datasets/`` in the data root (docs/architecture.md).
The ``dataset`` resource (``DatasetSettings``) holds every setting.
"""

import hashlib
import io
import json
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl

from geo_assets import mapviz
from geo_assets.cells import cells_bounds
from geo_assets.errors import InputError
from geo_assets.manifest import MERGED_PATH
from geo_assets.shards import (
    ShardSettings,
    build_shards,
    read_index,
    shard_table,
    verify_shards,
    write_descriptor,
)
from geo_assets.storage import DataRoot
from pipeline.resources import DatasetSettings, GeoscoutSettings

MANIFEST = dg.AssetKey(["image_manifest"])
DEFAULT_LEVELS = (1, 3, 5, 8)


# --- settings and inputs -----------------------------------------------------------------------

# geo_assets.splits and geo_assets.hierarchy (scipy behind them) are imported inside the
# functions that use them: slow to import, not needed to load the definitions.

def split_settings(ds: DatasetSettings):
    from geo_assets.splits import SplitSettings

    return SplitSettings(k_folds=ds.k_folds, test_fraction=ds.test_fraction,
                         min_distance_km=ds.min_distance_km, seed=ds.seed,
                         stratify_level=hierarchy_settings(ds).levels[0])


def hierarchy_settings(ds: DatasetSettings):
    from geo_assets.hierarchy import HierarchySettings

    return HierarchySettings(levels=tuple(ds.levels), min_images=ds.min_images,
                             max_images=ds.max_images)


def shard_settings(ds: DatasetSettings) -> ShardSettings:
    return ShardSettings(image_size=ds.image_size, jpeg_quality=ds.jpeg_quality,
                         shard_size=ds.shard_size, seed=ds.seed, workers=ds.workers)


def datasets_dir(root: DataRoot) -> Path:
    return root.local_path("datasets")


def kept_manifest(root: DataRoot) -> pl.DataFrame:
    """The kept rows of the merged manifest; a clear error when it is missing or empty."""
    if not root.exists(MERGED_PATH):
        raise InputError(f"image manifest {root.uri(MERGED_PATH)} not found: materialize "
                         "image_manifest first")
    kept = pl.read_parquet(root.local_path(MERGED_PATH)).filter(pl.col("kept"))
    if kept.height == 0:
        raise InputError(f"image manifest {root.uri(MERGED_PATH)} has no kept images")
    return kept


def with_split(frame: pl.DataFrame, out: Path) -> pl.DataFrame:
    """``frame`` joined on ``image_id`` with each image's split from ``splits.parquet``."""
    return frame.join(pl.read_parquet(out / "splits.parquet").select("image_id", "split"),
                      on="image_id")


def write_report(out: Path, name: str, data: bytes) -> Path:
    """Write ``data`` to ``out/reports/<name>`` and return its path."""
    path = out / "reports" / name
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(data)
    return path


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def markdown_table(frame: pl.DataFrame) -> str:
    head = "| " + " | ".join(frame.columns) + " |\n|" + "---|" * frame.width + "\n"
    return head + "".join("| " + " | ".join(str(v) for v in row) + " |\n"
                          for row in frame.rows())


# --- figures -------------------------------------------------------------------------------------

# matplotlib is imported in the figure functions: slow to import, needed only when drawing.

def _png(fig) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    return buf.getvalue()


def class_histogram_png(tables: dict[int, pl.DataFrame]) -> bytes:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4 * len(tables), 3), layout="constrained")
    for i, (level, t) in enumerate(tables.items()):
        ax = fig.add_subplot(1, len(tables), i + 1)
        ax.bar(np.arange(t.height), np.sort(t["n_train"].to_numpy())[::-1], width=1.0)
        ax.set(title=f"level {level}: {t.height} classes", xlabel="class (by size)",
               ylabel="training images", yscale="log")
    return _png(fig)


def leakage_png(test_to_train_km: np.ndarray, per_split: pl.DataFrame,
                min_distance_km: float) -> bytes:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3), layout="constrained")
    ax = fig.add_subplot(1, 2, 1)
    d = test_to_train_km[np.isfinite(test_to_train_km)]
    ax.hist(np.log10(np.maximum(d, 1e-3)), bins=40)
    ax.axvline(np.log10(max(min_distance_km, 1e-3)), color="red", label="min distance")
    ax.set(title="test image -> nearest train image", xlabel="log10 km", ylabel="images")
    ax.legend()
    ax = fig.add_subplot(1, 2, 2)
    names = [f"{s}-{'t' if f < 0 else f}" for s, f in per_split.select("split", "fold").rows()]
    ax.bar(names, per_split["images"].to_numpy(), label="images")
    ax.bar(names, per_split["leakage_groups"].to_numpy(), label="leakage groups")
    ax.set(title="per split")
    ax.legend()
    return _png(fig)


def classes_map_html(table: pl.DataFrame, level: int) -> bytes:
    t = table.sort("cell_level")
    palette = ["#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d"]
    colours = [palette[i % len(palette)] for i in t["class_index"].to_list()]
    tips = [f"class {c}: cell '{cell}' ({n} images, {k} train)" for c, cell, n, k in
            t.select("class_index", "cell_id", "n_images", "n_train").rows()]
    fmap = mapviz.boxes_map(cells_bounds(np.asarray(t["cell_id"].to_list(), dtype=object)),
                            colours, tooltips=tips, title=f"classes at level {level}")
    return mapviz.map_html(fmap)


# --- splits --------------------------------------------------------------------------------------

@dg.asset(deps=[MANIFEST], kinds={"polars"},
          description="Held-out test split + k folds, grouped so that no capture group and no "
          "two images closer than min_distance_km sit in different splits "
          "(datasets/splits.parquet, splits.json with the leakage report).")
def splits(context: dg.AssetExecutionContext, settings: GeoscoutSettings,
           dataset: DatasetSettings) -> dg.MaterializeResult:
    root = settings.root()
    out = datasets_dir(root)
    from geo_assets.splits import build_splits

    manifest = kept_manifest(root)
    sset = split_settings(dataset)
    result, report, figures = build_splits(manifest, sset, out, dataset.incremental)
    png = leakage_png(figures["test_to_train_km"], figures["per_split"], sset.min_distance_km)
    write_report(out, "leakage.png", png)
    context.log.info(f"splits: {result.splits.height} images, {report['excluded']} excluded")
    return dg.MaterializeResult(
        metadata={
            "images": result.splits.height, "excluded": report["excluded"],
            "incremental": report["incremental"],
            "kept_from_previous": report["kept_from_previous"],
            "per_split": dg.MetadataValue.md(markdown_table(figures["per_split"])),
            "nearest_test_to_train_km_min": report["nearest_test_to_train_km"]["min"] or -1.0,
            "groups_crossing": report["groups_crossing"],
            "close_pairs_crossing": report["close_pairs_crossing"],
            "leakage": dg.MetadataValue.md(mapviz.png_markdown(png, "leakage")),
            "path": dg.MetadataValue.path(str(out / "splits.parquet"))},
        data_version=dg.DataVersion(file_sha256(out / "splits.parquet")))


@dg.asset_check(asset=splits, blocking=True,
                description="No capture group and no pair closer than min_distance_km crosses "
                "splits or folds.")
def splits_no_leakage(settings: GeoscoutSettings,
                      dataset: DatasetSettings) -> dg.AssetCheckResult:
    root = settings.root()
    table = pl.read_parquet(datasets_dir(root) / "splits.parquet").join(
        kept_manifest(root).select("image_id", "source", "lat_deg", "lon_deg"), on="image_id")
    from geo_assets.splits import find_leaks

    leaks = find_leaks(table, dataset.min_distance_km)
    ok = leaks["groups_crossing"] == 0 and leaks["close_pairs_crossing"] == 0
    return dg.AssetCheckResult(passed=ok, metadata={
        "groups_crossing": leaks["groups_crossing"],
        "close_pairs_crossing": leaks["close_pairs_crossing"],
        "examples": dg.MetadataValue.json({"groups": leaks["group_examples"],
                                           "pairs": leaks["pair_examples"]})})


# --- hierarchy -----------------------------------------------------------------------------------

@dg.asset(deps=[splits], kinds={"polars"},
          description="Classes per hierarchy level fitted on the train split: label maps, "
          "parent -> children maps, centroids (datasets/hierarchy/).")
def hierarchy(context: dg.AssetExecutionContext, settings: GeoscoutSettings,
              dataset: DatasetSettings) -> dg.MaterializeResult:
    root = settings.root()
    out = datasets_dir(root)
    from geo_assets.hierarchy import fit_hierarchy, write_hierarchy

    table = with_split(kept_manifest(root), out)
    hset = hierarchy_settings(dataset)
    lat, lon = table["lat_deg"].to_numpy(), table["lon_deg"].to_numpy()
    fitted = fit_hierarchy(lat, lon, (table["split"] == "train").to_numpy(), hset)
    write_hierarchy(fitted, hset, table["image_id"], lat, lon, out / "hierarchy")
    png = class_histogram_png(fitted.tables)
    write_report(out, "class_histogram.png", png)
    maps = {level: write_report(out, f"classes_level_{level}.html", classes_map_html(t, level))
            for level, t in fitted.tables.items()}
    return dg.MaterializeResult(
        metadata={"classes": dg.MetadataValue.json({str(k): t.height
                                                    for k, t in fitted.tables.items()}),
                  "mode": "fixed" if hset.max_images is None else "adaptive",
                  "histogram": dg.MetadataValue.md(mapviz.png_markdown(png, "classes")),
                  **{f"map_level_{k}": dg.MetadataValue.path(str(p)) for k, p in maps.items()}},
        data_version=dg.DataVersion(file_sha256(out / "hierarchy" / "labels.parquet")[:16]
                                    + file_sha256(out / "hierarchy" / "levels.json")[:16]))


@dg.asset_check(asset=hierarchy, description="Each class has at least min_images training images.")
def classes_have_min_train_images(settings: GeoscoutSettings,
                                  dataset: DatasetSettings) -> dg.AssetCheckResult:
    out = datasets_dir(settings.root()) / "hierarchy"
    short = {}
    for level in dataset.levels:
        t = pl.read_parquet(out / f"level_{level}.parquet")
        short[str(level)] = t.filter(pl.col("n_train") < dataset.min_images).height
    return dg.AssetCheckResult(passed=not any(short.values()),
                               metadata={"classes_below_min": dg.MetadataValue.json(short)})


# --- shards --------------------------------------------------------------------------------------

@dg.asset(deps=[hierarchy], kinds={"webdataset"},
          description="WebDataset shards of resized images with every level's labels "
          "(datasets/shards/), and datasets/dataset.json, the descriptor training reads.")
def shards(context: dg.AssetExecutionContext, settings: GeoscoutSettings,
           dataset: DatasetSettings) -> dg.MaterializeResult:
    root = settings.root()
    out = datasets_dir(root)
    levels = list(hierarchy_settings(dataset).levels)
    table = shard_table(kept_manifest(root), pl.read_parquet(out / "splits.parquet"),
                        pl.read_parquet(out / "hierarchy" / "labels.parquet"),
                        lambda sha: str(root.local_path(DataRoot.image_relpath(sha))))
    sset = shard_settings(dataset)
    build = build_shards(table, levels, out / "shards", sset, dataset.incremental)
    meta = json.loads((out / "hierarchy" / "levels.json").read_text())
    descriptor = write_descriptor(
        out, levels=levels, num_classes=meta["num_classes"],
        manifest_sha256=file_sha256(root.local_path(MERGED_PATH)),
        split_settings=json.loads((out / "splits.json").read_text())["settings"],
        hierarchy_settings={k: meta[k] for k in ("min_images", "max_images", "mode")},
        image_size=sset.image_size, created_at=datetime.now(UTC).isoformat())
    context.log.info(f"shards: {len(build.written)} written, {len(build.kept)} kept, "
                     f"{len(build.failed_image_ids)} images failed, {build.seconds} s")
    return dg.MaterializeResult(
        metadata={"samples": build.index["total_count"], "shards": len(build.index["shards"]),
                  "written": len(build.written), "kept": len(build.kept),
                  "deleted": len(build.deleted), "failed_images": len(build.failed_image_ids),
                  "seconds": build.seconds,
                  "images_per_s": round(sum(s["count"] for s in build.written)
                                        / max(build.seconds, 1e-9), 1),
                  "num_classes": dg.MetadataValue.json(descriptor["num_classes"]),
                  "descriptor": dg.MetadataValue.path(str(out / "dataset.json"))},
        data_version=dg.DataVersion(hashlib.sha256(json.dumps(
            build.index["shards"], sort_keys=True).encode()).hexdigest()))


@dg.asset_check(asset=shards, blocking=True,
                description="Every kept manifest image (not excluded by the splits) is in "
                "exactly one shard.")
def every_image_in_one_shard(settings: GeoscoutSettings) -> dg.AssetCheckResult:
    root = settings.root()
    out = datasets_dir(root)
    contents = pl.read_parquet(out / "shards" / "contents.parquet")
    excluded = pl.read_parquet(out / "splits_excluded.parquet")
    wanted = kept_manifest(root).select("image_id").join(excluded, on="image_id", how="anti")
    counts = contents.group_by("image_id").len()
    missing = wanted.join(counts, on="image_id", how="anti")
    doubled = counts.filter(pl.col("len") > 1)
    extra = counts.join(wanted, on="image_id", how="anti")
    return dg.AssetCheckResult(
        passed=missing.height == 0 and doubled.height == 0 and extra.height == 0,
        metadata={"missing": missing.height, "in_several_shards": doubled.height,
                  "not_in_manifest": extra.height,
                  "missing_examples": dg.MetadataValue.json(missing["image_id"].head(5).to_list())})


@dg.asset_check(asset=shards, description="Shards read back with webdataset: sample counts, "
                "sha256 and records match the index, and every listed image is there.")
def shards_read_back(settings: GeoscoutSettings) -> dg.AssetCheckResult:
    out = datasets_dir(settings.root()) / "shards"
    index = read_index(out)
    result = verify_shards(out, index)
    listed = set(pl.read_parquet(out / "contents.parquet")["image_id"].to_list())
    same = listed == set(result["image_ids"]) and len(result["image_ids"]) == len(listed)
    return dg.AssetCheckResult(passed=not result["problems"] and same, metadata={
        "samples_read": len(result["image_ids"]), "problems": len(result["problems"]),
        "problem_examples": dg.MetadataValue.json(result["problems"][:5])})


# --- one dataset asset per level ------------------------------------------------------------------

def dataset_level_asset(level: int) -> dg.AssetsDefinition:
    """``dataset_level_<L>``: the level's label map, class counts and the shards it reads."""

    @dg.asset(name=f"dataset_level_{level}", deps=[shards], kinds={"json"},
              description=f"The level-{level} dataset: label map, class counts per split and "
              f"the shards it reads (datasets/dataset_level_{level}.json).")
    def _asset(settings: GeoscoutSettings) -> dg.MaterializeResult:
        out = datasets_dir(settings.root())
        summary = level_summary(out, level)
        path = out / f"dataset_level_{level}.json"
        path.write_text(json.dumps(summary, indent=1))
        return dg.MaterializeResult(
            metadata={"classes": summary["num_classes"],
                      "train_images": summary["images"]["train"],
                      "test_images": summary["images"]["test"],
                      "shards": len(summary["shards"]),
                      "label_map": dg.MetadataValue.path(str(out / summary["label_map"])),
                      "path": dg.MetadataValue.path(str(path))},
            data_version=dg.DataVersion(hashlib.sha256(
                json.dumps(summary, sort_keys=True).encode()).hexdigest()))
    return _asset


def level_summary(out: Path, level: int) -> dict:
    descriptor = json.loads((out / "dataset.json").read_text())
    if level not in descriptor["levels"]:
        raise InputError(f"level {level} is not among the dataset's levels "
                         f"{descriptor['levels']}: set the dataset resource's levels")
    table = pl.read_parquet(out / descriptor["level_files"][str(level)])
    labels = with_split(pl.read_parquet(out / descriptor["labels_file"]), out)
    counts = labels.group_by("split", f"label_{level}").len()
    index = json.loads((out / descriptor["shard_index"]).read_text())
    return {"level": level, "label_map": descriptor["level_files"][str(level)],
            "children_map": descriptor["children_files"][str(level)],
            "num_classes": table.height,
            "images": {s: int(counts.filter(pl.col("split") == s)["len"].sum())
                       for s in ("train", "test")},
            "class_counts": {s: _counts(counts, s, level, table.height)
                             for s in ("train", "test")},
            "shards": [f"shards/{e['name']}.tar" for e in index["shards"]],
            "descriptor": "dataset.json"}


def _counts(counts: pl.DataFrame, split: str, level: int, n: int) -> list[int]:
    part = counts.filter(pl.col("split") == split)
    return np.bincount(part[f"label_{level}"].to_numpy(), weights=part["len"].to_numpy(),
                       minlength=n).astype(int).tolist()


def dataset_assets(levels=DEFAULT_LEVELS) -> list[dg.AssetsDefinition]:
    """The per-level dataset assets for ``levels`` (the dataset resource's levels)."""
    return [dataset_level_asset(int(level)) for level in levels]


DATASET_LEVEL_ASSETS = dataset_assets()
dataset_level_1, dataset_level_3, dataset_level_5, dataset_level_8 = DATASET_LEVEL_ASSETS
