"""Dataset assets: splits, hierarchy, shards, and one dataset asset per hierarchy level.

Order: ``image_manifest`` -> ``splits`` -> ``hierarchy`` -> ``shards`` -> ``dataset_level_<L>``.
Splits come before the hierarchy because the classes are fitted on the training images only
(OSV-5M style); the splits stratify by the plain cells of the coarsest level, which need no
fitted classes. Files under ``datasets/`` in the data root (docs/architecture.md).
The ``dataset`` resource (``DatasetSettings``) holds every setting.
"""

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl

from geo_assets import layout, mapviz, plots
from geo_assets.errors import InputError
from geo_assets.shards import (
    build_shards,
    read_index,
    shard_table,
    verify_shards,
    write_descriptor,
)
from geo_assets.storage import (
    DataRoot,
    atomic_path,
    sha256_file,
    sha256_hex,
    write_json_atomic,
)
from pipeline import readable_metadata
from pipeline.resources import DatasetSettings, GeoscoutSettings

MANIFEST = dg.AssetKey(["image_manifest"])
DEFAULT_LEVELS = tuple(DatasetSettings.model_fields["levels"].default)


# --- settings and inputs -----------------------------------------------------------------------

@dataclass(frozen=True)
class Stage:
    """The data root, and the local folder that stands for it during a step (the root
    itself when local; a staged copy for object storage: ``DataRoot.staged``)."""

    root: DataRoot
    local: Path

    @property
    def out(self) -> Path:
        """The local datasets folder."""
        return self.local / layout.DATASETS_DIR

    def uri(self, path: Path) -> str:
        """Where a local file of the stage lives in the data root (for metadata links)."""
        return self.root.uri(Path(path).relative_to(self.local).as_posix())


def in_datasets(*names: str) -> list[str]:
    return [layout.in_datasets(n) for n in names]


@contextmanager
def staged(settings: GeoscoutSettings, reads: list[str],
           writes: list[str] = ()) -> Iterator[Stage]:
    """The step's ``Stage``: ``reads`` fetched first, ``writes`` published on success
    (root-relative paths)."""
    root = settings.root()
    with root.staged(reads, writes) as local:
        yield Stage(root, local)


def kept_manifest(stage: Stage, columns: list[str] | None = None) -> pl.DataFrame:
    """The kept rows of the merged manifest (only ``columns`` when given, read lazily); a
    clear error when it is missing or empty."""
    root = stage.root
    if not (stage.local / layout.IMAGE_MANIFEST).exists():
        raise InputError(f"image manifest {root.uri(layout.IMAGE_MANIFEST)} not found: "
                         "materialize image_manifest first")
    scan = pl.scan_parquet(stage.local / layout.IMAGE_MANIFEST).filter(pl.col("kept"))
    kept = (scan.select(columns) if columns else scan).collect()
    if kept.height == 0:
        reasons = (pl.scan_parquet(stage.local / layout.IMAGE_MANIFEST)
                   .group_by("drop_reason").len().sort("len", descending=True).collect())
        counts = ", ".join(f"{r} {n}" for r, n in reasons.head(5).iter_rows())
        raise InputError(f"image manifest {root.uri(layout.IMAGE_MANIFEST)} has no kept images"
                         f" (dropped: {counts or 'none recorded'}); see the drop reasons in "
                         "the README's tables, e.g. no_location: a photo without EXIF GPS or "
                         "a sidecar row (is the sidecar's file column relative to the folder?)")
    return kept


SPLIT_COLUMNS = ["image_id", "source", "group_id", "lat_deg", "lon_deg"]
SHARD_COLUMNS = [*SPLIT_COLUMNS, "sha256", "license", "attribution"]


def with_split(frame: pl.DataFrame, out: Path) -> pl.DataFrame:
    """``frame`` joined on ``image_id`` with each image's split from the splits file."""
    return frame.join(pl.read_parquet(out / layout.SPLITS).select("image_id", "split"),
                      on="image_id")


def write_report(out: Path, name: str, data: bytes) -> Path:
    """Write ``data`` atomically to ``name`` in the datasets' reports folder; its path."""
    path = out / layout.DATASET_REPORTS_DIR / name
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return path


def json_version(data) -> str:
    """A data version: the SHA-256 of ``data`` as canonical JSON."""
    return sha256_hex(json.dumps(data, sort_keys=True).encode())


# --- splits --------------------------------------------------------------------------------------

@dg.asset(deps=[MANIFEST], kinds={"polars"},
          description="Held-out test split + k folds by spatial blocks: no capture group and no "
          "two images closer than min_distance_km sit in different splits (images inside the "
          f"buffer are excluded with a reason); {layout.in_datasets(layout.SPLITS)}, "
          f"{layout.SPLITS_META} with the leakage report and the proportions.")
def splits(context: dg.AssetExecutionContext, settings: GeoscoutSettings,
           dataset: DatasetSettings) -> dg.MaterializeResult:
    from geo_assets.splits import build_splits

    sset = dataset.split_settings()
    with staged(settings, [layout.IMAGE_MANIFEST, *in_datasets(
            layout.SPLITS, layout.SPLITS_META, layout.SPLITS_EXCLUDED)],
                [layout.DATASETS_DIR]) as stage:
        out = stage.out
        result, report, figures = build_splits(kept_manifest(stage, SPLIT_COLUMNS), sset, out,
                                               dataset.incremental)
        per_split = figures["per_split"]
        png = plots.leakage_png(figures["test_to_train_km"], per_split, sset.min_distance_km)
        write_report(out, layout.LEAKAGE_FIGURE_FILE, png)
        version = sha256_file(out / layout.SPLITS)
    shares = report["proportions"]
    context.log.info(f"splits: {result.splits.height} images, {report['excluded']} excluded")
    for warning in shares["warnings"]:
        context.log.warning(f"splits: {warning}")
    return dg.MaterializeResult(
        metadata={
            "images": result.splits.height, "excluded": report["excluded"],
            "incremental": report["incremental"],
            "kept_from_previous": report["kept_from_previous"],
            "per_split": dg.MetadataValue.md(plots.markdown_table(per_split.columns,
                                                                  per_split.rows())),
            "nearest_test_to_train_km_min": report["nearest_test_to_train_km"]["min"] or -1.0,
            "groups_crossing": report["groups_crossing"],
            "images_near_other_split": report["images_near_other_split"],
            "proportions_within_tolerance": shares["within_tolerance"],
            "proportion_warnings": dg.MetadataValue.json(shares["warnings"]),
            "image_share": dg.MetadataValue.json({"target": shares["target_share"],
                                                  "actual": shares["image_share"]}),
            "leakage": dg.MetadataValue.md(plots.png_markdown(png, "leakage")),
            "path": dg.MetadataValue.path(stage.uri(out / layout.SPLITS))},
        data_version=dg.DataVersion(version))


def split_report(out: Path) -> dict:
    """The report ``build_splits`` stored with the splits; a clear error when it does not
    describe the current splits file."""
    report = json.loads((out / layout.SPLITS_META).read_text())["report"]
    if report.get("splits_sha256") != sha256_file(out / layout.SPLITS):
        raise InputError(f"{out / layout.SPLITS_META} does not describe the current "
                         f"{layout.SPLITS}: materialize splits again")
    return report


@dg.asset_check(asset=splits, blocking=True,
                description="No capture group and no pair closer than min_distance_km crosses "
                "splits or folds (nearest-other-split KD-tree queries, computed once when the "
                "splits are built).")
def splits_no_leakage(settings: GeoscoutSettings) -> dg.AssetCheckResult:
    with staged(settings, in_datasets(layout.SPLITS, layout.SPLITS_META)) as stage:
        leaks = split_report(stage.out)
    ok = leaks["groups_crossing"] == 0 and leaks["images_near_other_split"] == 0
    return dg.AssetCheckResult(passed=ok, metadata={
        "groups_crossing": leaks["groups_crossing"],
        "images_near_other_split": leaks["images_near_other_split"],
        "examples": dg.MetadataValue.json({"groups": leaks["group_examples"],
                                           "pairs": leaks["pair_examples"]})})


@dg.asset_check(asset=splits, description="Each split's share of the images and of the capture "
                "groups is within size_tolerance of its target (warns otherwise).")
def splits_proportions(settings: GeoscoutSettings) -> dg.AssetCheckResult:
    with staged(settings, in_datasets(layout.SPLITS, layout.SPLITS_META)) as stage:
        shares = split_report(stage.out)["proportions"]
    return dg.AssetCheckResult(
        passed=shares["within_tolerance"], severity=dg.AssetCheckSeverity.WARN,
        metadata={"warnings": dg.MetadataValue.json(shares["warnings"]),
                  "target_share": dg.MetadataValue.json(shares["target_share"]),
                  "image_share": dg.MetadataValue.json(shares["image_share"]),
                  "capture_groups": dg.MetadataValue.json(shares["capture_groups"]),
                  "buffer_dropped": shares["buffer_dropped"]})


# --- hierarchy -----------------------------------------------------------------------------------

@dg.asset(deps=[splits], kinds={"polars"},
          description="Classes per hierarchy level fitted on the train split: label maps, "
          f"parent -> children maps, centroids ({layout.in_datasets(layout.HIERARCHY_DIR)}/).")
def hierarchy(settings: GeoscoutSettings, dataset: DatasetSettings) -> dg.MaterializeResult:
    from geo_assets.hierarchy import fit_hierarchy, write_hierarchy

    hset = dataset.hierarchy_settings()
    with staged(settings, [layout.IMAGE_MANIFEST, *in_datasets(layout.SPLITS)],
                [layout.DATASETS_DIR]) as stage:
        out = stage.out
        table = with_split(kept_manifest(stage, ["image_id", "lat_deg", "lon_deg"]), out)
        lat, lon = table["lat_deg"].to_numpy(), table["lon_deg"].to_numpy()
        fitted = fit_hierarchy(lat, lon, (table["split"] == "train").to_numpy(), hset)
        write_hierarchy(fitted, hset, table["image_id"], lat, lon, out / layout.HIERARCHY_DIR)
        png = plots.class_histogram_png({lv: t["n_train"] for lv, t in fitted.tables.items()})
        write_report(out, layout.CLASS_HISTOGRAM_FILE, png)
        maps = {lv: stage.uri(write_report(out, layout.classes_map_file(lv),
                                           mapviz.classes_map_html(t, lv)))
                for lv, t in fitted.tables.items()}
        views = class_map_views(stage, fitted.tables)
        version = sha256_file(out / layout.LABELS)[:16] + sha256_file(out / layout.LEVELS_META)[:16]
    return dg.MaterializeResult(
        metadata={"classes": dg.MetadataValue.json({str(k): t.height
                                                    for k, t in fitted.tables.items()}),
                  "mode": "fixed" if hset.max_images is None else "adaptive",
                  "histogram": dg.MetadataValue.md(plots.png_markdown(png, "classes")),
                  **{f"map_level_{k}": dg.MetadataValue.path(p) for k, p in maps.items()},
                  **views},
        data_version=dg.DataVersion(version))


@dg.asset_check(asset=hierarchy, description="Each class has at least min_images training images.")
def classes_have_min_train_images(settings: GeoscoutSettings,
                                  dataset: DatasetSettings) -> dg.AssetCheckResult:
    short = {}
    with staged(settings, in_datasets(*map(layout.level_table, dataset.levels))) as stage:
        for level in dataset.levels:
            t = pl.read_parquet(stage.out / layout.level_table(level))
            short[str(level)] = t.filter(pl.col("n_train") < dataset.min_images).height
    return dg.AssetCheckResult(passed=not any(short.values()),
                               metadata={"classes_below_min": dg.MetadataValue.json(short)})


# --- shards --------------------------------------------------------------------------------------

@dg.asset(deps=[hierarchy], kinds={"webdataset"},
          description="WebDataset shards of resized images with every level's labels "
          f"({layout.in_datasets(layout.SHARDS_DIR)}/), and "
          f"{layout.in_datasets(layout.DESCRIPTOR)}, the descriptor training reads.")
def shards(context: dg.AssetExecutionContext, settings: GeoscoutSettings,
           dataset: DatasetSettings) -> dg.MaterializeResult:
    levels, sset = list(dataset.levels), dataset.shard_settings()
    # The shards folder is fetched whole (an incremental build keeps or relabels old shards);
    # the index and the descriptor are published last. Images are read from the root.
    with staged(settings, [layout.IMAGE_MANIFEST, *in_datasets(
            layout.SPLITS, layout.SPLITS_META, layout.HIERARCHY_DIR, layout.SHARDS_DIR)],
                [*in_datasets(layout.SHARDS_DIR), layout.DATASETS_DIR,
                 *in_datasets(layout.SHARD_INDEX, layout.DESCRIPTOR)]) as stage:
        root, out = stage.root, stage.out
        table = shard_table(kept_manifest(stage, SHARD_COLUMNS),  # scans: needed columns only
                            pl.scan_parquet(out / layout.SPLITS),
                            pl.scan_parquet(out / layout.LABELS),
                            lambda sha: root.uri(layout.image(sha)))
        build = build_shards(table, levels, out / layout.SHARDS_DIR, sset, dataset.incremental)
        meta = json.loads((out / layout.LEVELS_META).read_text())
        descriptor = write_descriptor(
            out, levels=levels, num_classes=meta["num_classes"],
            manifest_sha256=sha256_file(stage.local / layout.IMAGE_MANIFEST),
            split_settings=json.loads((out / layout.SPLITS_META).read_text())["settings"],
            hierarchy_settings={k: meta[k] for k in ("min_images", "max_images", "mode")},
            image_size=sset.image_size, created_at=datetime.now(UTC).isoformat())
        card = dataset_card_metadata(stage, table, build, descriptor)
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
                  "descriptor": dg.MetadataValue.path(stage.uri(out / layout.DESCRIPTOR)),
                  **card},
        data_version=dg.DataVersion(json_version(build.index["shards"])))


@dg.asset_check(asset=shards, blocking=True,
                description="Every kept manifest image (not excluded by the splits) is in "
                "exactly one shard.")
def every_image_in_one_shard(settings: GeoscoutSettings) -> dg.AssetCheckResult:
    with staged(settings, [layout.IMAGE_MANIFEST, *in_datasets(
            layout.SHARD_CONTENTS, layout.SPLITS_EXCLUDED)]) as stage:
        contents = pl.read_parquet(stage.out / layout.SHARD_CONTENTS)
        excluded = pl.read_parquet(stage.out / layout.SPLITS_EXCLUDED)
        wanted = kept_manifest(stage, ["image_id"]).join(excluded, on="image_id", how="anti")
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
    with staged(settings, in_datasets(layout.SHARDS_DIR)) as stage:
        shard_dir = stage.out / layout.SHARDS_DIR
        result = verify_shards(shard_dir, read_index(shard_dir))
        listed = set(pl.read_parquet(stage.out / layout.SHARD_CONTENTS)["image_id"].to_list())
    same = listed == set(result["image_ids"]) and len(result["image_ids"]) == len(listed)
    return dg.AssetCheckResult(passed=not result["problems"] and same, metadata={
        "samples_read": len(result["image_ids"]), "problems": len(result["problems"]),
        "problem_examples": dg.MetadataValue.json(result["problems"][:5])})


# --- one dataset asset per level ------------------------------------------------------------------

def dataset_level_asset(level: int) -> dg.AssetsDefinition:
    """``dataset_level_<L>``: the level's label map, class counts and the shards it reads."""

    @dg.asset(name=f"dataset_level_{level}", deps=[shards], kinds={"json"},
              description=f"The level-{level} dataset: label map, class counts per split and "
              f"the shards it reads ({layout.in_datasets(layout.dataset_level(level))}).")
    def _asset(settings: GeoscoutSettings) -> dg.MaterializeResult:
        reads = in_datasets(layout.DESCRIPTOR, layout.HIERARCHY_DIR, layout.SPLITS,
                            layout.SHARD_INDEX, f"{layout.DATASET_REPORTS_DIR}/"
                            f"{layout.classes_png_file(level)}")
        with staged(settings, reads, in_datasets(layout.dataset_level(level),
                                                 layout.DATASET_REPORTS_DIR)) as stage:
            out = stage.out
            summary = level_summary(out, level)
            path = out / layout.dataset_level(level)
            write_json_atomic(path, summary)
            views = level_views(stage, level, summary)
        return dg.MaterializeResult(
            metadata={"classes": summary["num_classes"],
                      "train_images": summary["images"]["train"],
                      "test_images": summary["images"]["test"],
                      "shards": len(summary["shards"]),
                      "label_map": dg.MetadataValue.path(stage.uri(out / summary["label_map"])),
                      "path": dg.MetadataValue.path(stage.uri(path)),
                      **views},
            data_version=dg.DataVersion(json_version(summary)))
    return _asset


def level_summary(out: Path, level: int) -> dict:
    descriptor = json.loads((out / layout.DESCRIPTOR).read_text())
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
            "shards": [f"{layout.SHARDS_DIR}/{layout.shard_file(e['name'])}"
                       for e in index["shards"]],
            "descriptor": layout.DESCRIPTOR}


def _counts(counts: pl.DataFrame, split: str, level: int, n: int) -> list[int]:
    part = counts.filter(pl.col("split") == split)
    return np.bincount(part[f"label_{level}"].to_numpy(), weights=part["len"].to_numpy(),
                       minlength=n).astype(int).tolist()


# --- figures and cards for people (readable metadata) ------------------------------------------

def class_map_views(stage: Stage, tables: dict) -> dict:
    """Each level's classes as a static map (PNG beside the HTML map), inline in the UI."""
    views = {}
    for level, table in tables.items():
        png = mapviz.classes_png(table, level)
        path = write_report(stage.out, layout.classes_png_file(level), png)
        views[f"class_map_level_{level}"] = readable_metadata.image(png, f"level {level}")
        views[f"class_map_level_{level}_file"] = readable_metadata.file_link(stage.uri(path))
    return views


def level_views(stage: Stage, level: int, summary: dict) -> dict:
    """A level's class map (drawn by ``hierarchy``) and its training images per class."""
    png = plots.class_histogram_png({level: summary["class_counts"]["train"]})
    write_report(stage.out, layout.level_histogram_file(level), png)
    views = {"class_histogram": readable_metadata.image(png, f"level {level} classes")}
    map_png = stage.out / layout.DATASET_REPORTS_DIR / layout.classes_png_file(level)
    if map_png.exists():
        views["class_map"] = readable_metadata.image(map_png.read_bytes(), f"level {level}")
        views["class_map_file"] = readable_metadata.file_link(stage.uri(map_png))
    return views


def dataset_card_metadata(stage: Stage, table: pl.DataFrame, build, descriptor: dict) -> dict:
    """Write the dataset card and attribution list beside the shards; the card in the UI."""
    from geo_assets.cards import write_dataset_card

    finest = f"cell_{max(descriptor['levels'])}"  # the image's own cell at the finest level
    images = table.join(build.contents.select("image_id"), on="image_id").with_columns(
        cell_id=pl.col(finest))
    card = write_dataset_card(stage.out, images, images, descriptor, build.index)
    text = card["card"].read_text(encoding="utf-8")
    body = text.split("---\n", 2)[-1] if text.startswith("---\n") else text  # no YAML header
    return {"dataset_card": dg.MetadataValue.md(body),
            "dataset_card_file": readable_metadata.file_link(stage.uri(card["card"])),
            "attribution_file": readable_metadata.file_link(stage.uri(card["attribution"])),
            "credit_lines": card["credit_lines"],
            "top_cells_share": card["skew"]["top_cells_share"]}


def dataset_assets(levels=DEFAULT_LEVELS) -> list[dg.AssetsDefinition]:
    """The per-level dataset assets for ``levels`` (the dataset resource's levels; the
    definitions generate them from the settings, so none is defined at import)."""
    return [dataset_level_asset(int(level)) for level in levels]
