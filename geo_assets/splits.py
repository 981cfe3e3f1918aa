"""Leakage-free splits: a held-out test split plus k folds, by groups of related images.

Leakage groups are the connected components (a union-find, done with scipy's
``connected_components``) of two kinds of links:

- the same capture group: a Mapillary sequence, a Street View panorama (all its headings), a
  local photo group (``source`` + ``group_id``);
- two images closer than ``min_distance_km`` (default 1 km): pairs from a KD-tree on 3-D unit
  vectors, the chord ``2 sin(d / 2R)`` standing for the great-circle distance ``d``.

A whole group goes to one bucket: the test split or one fold. Groups are stratified by the
cell of the coarsest hierarchy level: within each cell, groups are ordered by a seeded hash of
their key (their smallest image id), and their cumulative image count, started at a seeded
random offset, is cut at the bucket fractions (test first, then folds 0..k-1). The result is
deterministic by seed and independent of row order.

Incremental: with the previous splits table, a group holding old images keeps their bucket,
and groups of new images only are placed the same way among themselves. A new image that
links groups already in different buckets cannot be placed without leakage: it is left out
(returned in ``excluded`` with the reason) and nothing old moves.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from geo_assets import layout
from geo_assets.cells import points_to_cells
from geo_assets.errors import InputError
from geo_assets.settings import SplitSettings
from geo_assets.sphere import chord_to_km, km_to_chord, unit_vectors
from geo_assets.storage import atomic_path, write_json_atomic

TEST = "test"
TRAIN = "train"


def split_edges(settings: SplitSettings) -> np.ndarray:
    """Bucket boundaries on [0, 1): test, fold 0, ..., fold k-1."""
    fold = (1 - settings.test_fraction) / settings.k_folds
    return np.concatenate([[0.0, settings.test_fraction],
                           settings.test_fraction + fold * np.arange(1, settings.k_folds)])


@dataclass(frozen=True)
class SplitResult:
    splits: pl.DataFrame     # image_id, group_id, split, fold, leak_group
    excluded: pl.DataFrame   # image_id, reason


# --- geometry --------------------------------------------------------------------------------

def close_pairs(xyz: np.ndarray, min_distance_km: float) -> np.ndarray:
    """(P, 2) index pairs closer than ``min_distance_km``; identical points collapse first."""
    if len(xyz) < 2 or min_distance_km <= 0:
        return np.empty((0, 2), np.int64)
    uniq, inverse = np.unique(np.round(xyz, 12), axis=0, return_inverse=True)
    inverse = inverse.ravel()
    pairs = cKDTree(uniq).query_pairs(km_to_chord(min_distance_km), output_type="ndarray")
    first = np.full(len(uniq), -1, np.int64)
    first[inverse[::-1]] = np.arange(len(xyz))[::-1]  # first image at each unique point
    same_point = np.stack([np.arange(len(xyz)), first[inverse]], axis=1)
    return np.concatenate([first[pairs], same_point[same_point[:, 0] != same_point[:, 1]]])


def group_pairs(source, group_id) -> np.ndarray:
    """Pairs linking each image of a capture group to the group's first image."""
    keys = np.asarray(pl.Series(source, dtype=pl.String) + ":" +
                      pl.Series(group_id, dtype=pl.String).fill_null(""), dtype=object)
    has_group = ~pl.Series(group_id, dtype=pl.String).is_null().to_numpy()
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    idx = np.arange(len(keys))
    pairs = np.stack([idx, first[inverse.ravel()]], axis=1)
    return pairs[has_group & (pairs[:, 0] != pairs[:, 1])]


def leakage_components(table: pl.DataFrame, min_distance_km: float) -> np.ndarray:
    """Component number per row of ``table`` (source, group_id, lat_deg, lon_deg)."""
    n = table.height
    xyz = unit_vectors(table["lat_deg"].to_numpy(), table["lon_deg"].to_numpy())
    pairs = np.concatenate([close_pairs(xyz, min_distance_km),
                            group_pairs(table["source"], table["group_id"])])
    graph = coo_matrix((np.ones(len(pairs), np.int8), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    return connected_components(graph, directed=False)[1]


# --- assignment ------------------------------------------------------------------------------

def hash_unit(values, seed: int, salt: str = "") -> np.ndarray:
    """A seeded hash of each string, as a float in [0, 1)."""
    return np.array([int.from_bytes(hashlib.blake2b(f"{seed}:{salt}:{v}".encode(),
                                                    digest_size=8).digest(), "big") / 2.0**64
                     for v in values])


def _fill_empty_buckets(groups: pl.DataFrame, n_buckets: int) -> pl.DataFrame:
    """Give each empty bucket the smallest group of the bucket holding the most groups."""
    for _ in range(n_buckets):
        counts = np.bincount(groups["bucket"].to_numpy(), minlength=n_buckets)
        empty = np.flatnonzero(counts == 0)
        if len(empty) == 0:
            break
        donor = int(np.argmax(counts))
        move = groups.filter(pl.col("bucket") == donor).sort("n", "key")["key"][0]
        groups = groups.with_columns(bucket=pl.when(pl.col("key") == move)
                                     .then(pl.lit(int(empty[0]))).otherwise("bucket"))
    return groups


def assign_buckets(groups: pl.DataFrame, settings: SplitSettings,
                   complete: bool = True) -> pl.DataFrame:
    """Add ``bucket`` (0 = test, 1 + f = fold f) to groups (key, n, stratum).

    ``complete``: every bucket must get a group (a fresh build); False for the new groups of
    an incremental build, which join buckets that already hold images.
    """
    if complete and groups.height < settings.k_folds + 1:
        raise InputError(
            f"k_folds={settings.k_folds} needs at least {settings.k_folds + 1} leakage groups "
            f"(test + {settings.k_folds} folds), but the images form only {groups.height}: "
            "lower k_folds or min_distance_km, or add images")
    strata = groups["stratum"].unique().sort()
    offsets = pl.DataFrame({"stratum": strata, "offset": hash_unit(strata, settings.seed, "s")})
    ordered = groups.with_columns(order=pl.Series(hash_unit(groups["key"], settings.seed))) \
        .join(offsets, on="stratum").sort("stratum", "order")
    pos = ordered.select(((pl.col("n").cum_sum() - pl.col("n") / 2).over("stratum")
                          / pl.col("n").sum().over("stratum") + pl.col("offset")) % 1.0)
    bucket = np.searchsorted(split_edges(settings), pos.to_series().to_numpy(), side="right") - 1
    out = ordered.with_columns(bucket=pl.Series(bucket, dtype=pl.Int64)).drop("order", "offset")
    return _fill_empty_buckets(out, settings.k_folds + 1) if complete else out


def _bucket_columns(bucket: pl.Expr) -> list[pl.Expr]:
    return [pl.when(bucket == 0).then(pl.lit(TEST)).otherwise(pl.lit(TRAIN)).alias("split"),
            pl.when(bucket == 0).then(pl.lit(-1)).otherwise(bucket - 1).alias("fold")]


def _groups(table: pl.DataFrame, settings: SplitSettings) -> pl.DataFrame:
    """Per row: leak_group (its component's smallest image id) and stratum."""
    comp = leakage_components(table, settings.min_distance_km)
    stratum = points_to_cells(table["lat_deg"].to_numpy(), table["lon_deg"].to_numpy(),
                              settings.stratify_level)
    rows = table.with_columns(comp=pl.Series(comp), stratum=pl.Series(stratum, dtype=pl.String))
    return rows.with_columns(leak_group=pl.col("image_id").first().over("comp"),
                             stratum=pl.col("stratum").first().over("comp"))


def _check_table(manifest: pl.DataFrame) -> pl.DataFrame:
    needed = ["image_id", "source", "group_id", "lat_deg", "lon_deg"]
    missing = [c for c in needed if c not in manifest.columns]
    if missing:
        raise InputError(f"image manifest lacks columns {missing}")
    if manifest.height == 0:
        raise InputError("image manifest has no kept images: nothing to split; run the "
                         "ingest assets first")
    if manifest["image_id"].n_unique() != manifest.height:
        raise InputError("image manifest has duplicate image_id values")
    return manifest.select(needed).sort("image_id")


def _old_buckets(rows: pl.DataFrame, previous: pl.DataFrame) -> pl.DataFrame:
    old = previous.select("image_id", old_bucket=pl.when(pl.col("split") == TEST).then(0)
                          .otherwise(pl.col("fold") + 1).cast(pl.Int64))
    rows = rows.join(old, on="image_id", how="left")
    return rows.with_columns(n_old=pl.col("old_bucket").drop_nulls().n_unique().over("comp"),
                             prior=pl.col("old_bucket").drop_nulls().first().over("comp"))


def _incremental(table: pl.DataFrame, previous: pl.DataFrame,
                 settings: SplitSettings) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Rows with ``prior`` (old bucket or null) and the excluded new images."""
    rows = _old_buckets(_groups(table, settings), previous)
    bridge = rows.filter((pl.col("n_old") > 1) & pl.col("old_bucket").is_null())
    excluded = bridge.select("image_id", reason=pl.lit(
        "links capture groups or places already in different splits"))
    if bridge.height:
        rows = _old_buckets(_groups(table.join(bridge, on="image_id", how="anti"), settings),
                            previous)
    if rows["n_old"].max() > 1:
        raise InputError("the previous splits file disagrees with the current grouping (old "
                         "images that are now linked sit in different splits): the grouping "
                         f"settings changed; delete {layout.in_datasets(layout.SPLITS)} to "
                         "rebuild splits")
    return rows, excluded


def make_splits(manifest: pl.DataFrame, settings: SplitSettings,
                previous: pl.DataFrame | None = None) -> SplitResult:
    """Assign every kept image to the test split or a fold (see the module docstring).

    ``manifest``: kept images with image_id, source, group_id, lat_deg, lon_deg. ``previous``:
    the last splits table (image_id, split, fold), the authority for the images it holds.
    """
    table = _check_table(manifest)
    excluded = pl.DataFrame(schema={"image_id": pl.String, "reason": pl.String})
    if previous is not None and previous.height:
        rows, excluded = _incremental(table, previous, settings)
    else:
        rows = _groups(table, settings).with_columns(prior=pl.lit(None, pl.Int64))
    fresh = rows.filter(pl.col("prior").is_null()).group_by("leak_group").agg(
        n=pl.len(), stratum=pl.col("stratum").first()).rename({"leak_group": "key"})
    placed = assign_buckets(fresh, settings, complete=previous is None or previous.height == 0)
    rows = rows.join(placed.select(leak_group="key", new_bucket="bucket"), on="leak_group",
                     how="left").with_columns(bucket=pl.coalesce("prior", "new_bucket"))
    splits = rows.select("image_id", "group_id", *_bucket_columns(pl.col("bucket")),
                         "leak_group").sort("image_id")
    return SplitResult(splits, excluded)


# --- checks and the leakage report -----------------------------------------------------------

def _bucket(table: pl.DataFrame) -> np.ndarray:
    return np.where(table["split"].to_numpy() == TEST, 0, table["fold"].to_numpy() + 1)


def find_leaks(table: pl.DataFrame, min_distance_km: float, examples: int = 5) -> dict:
    """Capture groups and close pairs that cross buckets (test / fold f): should be none.

    ``table``: image_id, source, group_id, lat_deg, lon_deg, split, fold.
    """
    t = table.with_columns(bucket=pl.Series(_bucket(table)))
    crossing = t.filter(pl.col("group_id").is_not_null()).group_by("source", "group_id").agg(
        n_buckets=pl.col("bucket").n_unique()).filter(pl.col("n_buckets") > 1)
    xyz = unit_vectors(t["lat_deg"].to_numpy(), t["lon_deg"].to_numpy())
    pairs = close_pairs(xyz, min_distance_km)
    bucket = t["bucket"].to_numpy()
    bad = pairs[bucket[pairs[:, 0]] != bucket[pairs[:, 1]]]
    ids = t["image_id"].to_numpy()
    return {"groups_crossing": crossing.height,
            "group_examples": crossing["group_id"].head(examples).to_list(),
            "close_pairs_crossing": len(bad),
            "pair_examples": [[str(ids[a]), str(ids[b]),
                               float(chord_to_km(np.linalg.norm(xyz[a] - xyz[b])))]
                              for a, b in bad[:examples]]}


def nearest_km(xyz_from: np.ndarray, xyz_to: np.ndarray) -> np.ndarray:
    """Distance in km from each point of ``xyz_from`` to the nearest of ``xyz_to``."""
    if len(xyz_from) == 0 or len(xyz_to) == 0:
        return np.full(len(xyz_from), np.inf)
    return chord_to_km(cKDTree(xyz_to).query(xyz_from, k=1)[0])


def leakage_report(table: pl.DataFrame, settings: SplitSettings) -> tuple[dict, dict]:
    """(report, figure data): counts per bucket, nearest cross-split distances, leaks.

    ``table``: splits joined with the manifest (source, group_id, lat_deg, lon_deg).
    """
    bucket = _bucket(table)
    xyz = unit_vectors(table["lat_deg"].to_numpy(), table["lon_deg"].to_numpy())
    test_to_train = nearest_km(xyz[bucket == 0], xyz[bucket > 0])
    fold_min = {}
    for f in range(settings.k_folds):
        d = nearest_km(xyz[bucket == f + 1], xyz[(bucket > 0) & (bucket != f + 1)])
        fold_min[str(f)] = float(d.min()) if len(d) else None
    per = table.with_columns(bucket=pl.Series(bucket)).group_by("split", "fold").agg(
        images=pl.len(), capture_groups=pl.struct("source", "group_id").n_unique(),
        leakage_groups=pl.col("leak_group").n_unique()).sort("split", "fold")
    report = {"per_split": per.to_dicts(),
              "nearest_test_to_train_km": {
                  "min": float(test_to_train.min()) if len(test_to_train) else None,
                  "median": float(np.median(test_to_train)) if len(test_to_train) else None},
              "nearest_fold_to_other_folds_km_min": fold_min,
              "min_distance_km": settings.min_distance_km,
              **find_leaks(table, settings.min_distance_km)}
    return report, {"test_to_train_km": test_to_train, "per_split": per}


# --- files -------------------------------------------------------------------------------------

def _settings_dict(settings: SplitSettings) -> dict:
    return {"k_folds": settings.k_folds, "test_fraction": settings.test_fraction,
            "min_distance_km": settings.min_distance_km, "seed": settings.seed,
            "stratify_level": settings.stratify_level}


def read_previous(out_dir: Path, settings: SplitSettings) -> pl.DataFrame | None:
    """The last splits table when it was made with the same settings, else None."""
    meta, table = out_dir / layout.SPLITS_META, out_dir / layout.SPLITS
    if not (meta.exists() and table.exists()):
        return None
    if json.loads(meta.read_text()).get("settings") != _settings_dict(settings):
        return None
    return pl.read_parquet(table)


def build_splits(manifest: pl.DataFrame, settings: SplitSettings, out_dir: Path,
                 incremental: bool = True) -> tuple[SplitResult, dict, dict]:
    """Make the splits (keeping the previous file's assignments) and write, atomically,
    ``splits.parquet``, ``splits_excluded.parquet`` and ``splits.json`` (settings + report).
    Returns (result, report, figure data)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    previous = read_previous(out_dir, settings) if incremental else None
    result = make_splits(manifest, settings, previous)
    joined = result.splits.join(manifest.select("image_id", "source", "lat_deg", "lon_deg"),
                                on="image_id")
    report, figures = leakage_report(joined, settings)
    report["incremental"] = previous is not None
    report["kept_from_previous"] = 0 if previous is None else int(
        result.splits.join(previous.select("image_id"), on="image_id", how="semi").height)
    report["excluded"] = result.excluded.height
    for name, frame in ((layout.SPLITS, result.splits),
                        (layout.SPLITS_EXCLUDED, result.excluded)):
        with atomic_path(out_dir / name) as tmp:
            frame.write_parquet(tmp)
    meta = {"settings": _settings_dict(settings), "report": report}
    write_json_atomic(out_dir / layout.SPLITS_META, meta, sort_keys=False)
    return result, report, figures
