"""Leakage-free splits that keep their proportions: a held-out test split plus k folds.

The promise: no capture group (a Mapillary sequence, a Street View panorama, a local photo
group: ``source`` + ``group_id``) and no two images closer than ``min_distance_km`` sit in
different buckets (the test split or one fold). Transitive chains of close pairs are not
used: on real, clumpy collections they merge most of the data into one component. Instead,
as OSV-5M separates its test set by 1 km:

1. **Spatial blocks.** Every image lies in a quadtree cell (``geo_assets.cells``). A block is
   the coarsest cell (from ``stratify_level`` down to the level whose cell height is at least
   ``block_km``) holding at most ``cap`` images, ``cap`` being a small share of the smallest
   bucket; dense places end up in small blocks, sparse ones in large blocks.
2. **Groups follow their block.** A capture group's anchor is the block holding most of its
   images; the group goes wherever its anchor goes, whole.
3. **Seeded, size-balanced assignment.** Blocks, weighted by the images anchored in them, are
   ordered by a seeded hash within each stratum (the ``stratify_level`` cell) and their
   cumulative count, started at a seeded offset, is cut at the bucket fractions.
4. **Buffer.** An image with an image of another bucket within ``min_distance_km`` is dropped
   when that bucket wins against its own (old images beat new ones; the test split beats the
   folds; folds beat each other in a balanced round robin), and recorded in ``excluded`` with
   the reason. Every close pair across buckets loses at least one side, so none is left.

All steps are sorts, group-bys and KD-tree queries of the k + 1 buckets: O(N log N) time and
O(N) memory, no pair lists. Deterministic by seed and independent of row order.

Incremental: with the previous splits table, old images keep their bucket (a new image of an
old capture group joins it; a new group whose anchor block holds old images joins their
majority bucket); new blocks are placed as above, and the buffer treats old images as winners.
The leakage report and the proportion checks are in ``geo_assets.split_checks``.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
from scipy.spatial import cKDTree

from geo_assets import layout
from geo_assets.cells import MAX_LEVEL, points_to_rowcol, rowcol_to_ids
from geo_assets.errors import InputError
from geo_assets.settings import SplitSettings
from geo_assets.sphere import KM_PER_DEG, km_to_chord, unit_vectors
from geo_assets.storage import atomic_path, sha256_file, write_json_atomic

TEST = "test"
TRAIN = "train"
BLOCKS_PER_BUCKET = 40  # a block holds at most 1/40 of the smallest bucket's target


def split_edges(settings: SplitSettings) -> np.ndarray:
    """Bucket boundaries on [0, 1): test, fold 0, ..., fold k-1."""
    fold = (1 - settings.test_fraction) / settings.k_folds
    return np.concatenate([[0.0, settings.test_fraction],
                           settings.test_fraction + fold * np.arange(1, settings.k_folds)])


def bucket_fractions(settings: SplitSettings) -> np.ndarray:
    """Target share of each bucket: test, fold 0..k-1."""
    return np.diff(np.append(split_edges(settings), 1.0))


@dataclass(frozen=True)
class SplitResult:
    splits: pl.DataFrame     # image_id, group_id, split, fold, leak_group (the block)
    excluded: pl.DataFrame   # image_id, reason


def bucket_name(bucket: int) -> str:
    return TEST if bucket == 0 else f"fold {bucket - 1}"


# --- blocks ------------------------------------------------------------------------------------

def block_level(settings: SplitSettings) -> int:
    """Finest block level: the deepest whose cell height is at least ``block_km`` and twice
    ``min_distance_km`` (so a buffer never spans a block)."""
    km = max(settings.block_km, 2 * settings.min_distance_km)
    level = math.floor(math.log2(180.0 * KM_PER_DEG / km))
    return int(np.clip(level, settings.stratify_level, MAX_LEVEL))


def _block_code(level: int, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    return (np.int64(level) << 50) | (rows.astype(np.int64) << 25) | cols.astype(np.int64)


def adaptive_blocks(lat, lon, settings: SplitSettings, cap: int) -> np.ndarray:
    """Per image, an int64 code of its block: the coarsest cell from ``stratify_level`` to
    ``block_level`` holding at most ``cap`` images (``block_ids`` turns codes into ids)."""
    fine = block_level(settings)
    rows, cols = points_to_rowcol(lat, lon, fine)
    block = np.full(len(rows), -1, np.int64)
    for level in range(settings.stratify_level, fine + 1):
        shift = fine - level
        code = _block_code(level, rows >> shift, cols >> shift)
        free = block < 0
        _, inverse, counts = np.unique(code[free], return_inverse=True, return_counts=True)
        small = counts[inverse.ravel()] <= cap
        if level == fine:
            small[:] = True
        idx = np.flatnonzero(free)[small]
        block[idx] = code[idx]
        if (block >= 0).all():
            break
    return block


def block_ids(codes: np.ndarray) -> np.ndarray:
    """Cell ids (strings) of block codes."""
    codes = np.asarray(codes, np.int64)
    out = np.empty(len(codes), object)
    levels = codes >> 50
    for level in np.unique(levels):
        sel = levels == level
        out[sel] = rowcol_to_ids(int(level), (codes[sel] >> 25) & (2**25 - 1),
                                 codes[sel] & (2**25 - 1))
    return out


def block_stratum(codes: np.ndarray, stratify_level: int) -> np.ndarray:
    """The stratify-level cell (as an int) of each block."""
    shift = (codes >> 50) - stratify_level
    return (((codes >> 25) & (2**25 - 1)) >> shift) * (1 << 25) + ((codes & (2**25 - 1)) >> shift)


# --- assignment ------------------------------------------------------------------------------

def hash_unit(values, seed: int, salt: str = "") -> np.ndarray:
    """A seeded hash of each value, as a float in [0, 1) (stable across versions)."""
    return np.array([int.from_bytes(hashlib.blake2b(f"{seed}:{salt}:{v}".encode(),
                                                    digest_size=8).digest(), "big") / 2.0**64
                     for v in values])


def assign_buckets(blocks: pl.DataFrame, settings: SplitSettings,
                   assigned: np.ndarray | None = None,
                   fractions: np.ndarray | None = None) -> pl.DataFrame:
    """Add ``bucket`` (0 = test, 1 + f = fold f) to blocks (key, n, stratum).

    Stratum by stratum (in a seeded order), largest block first (ties: a seeded hash of the
    key), each block goes to the bucket furthest below its share of the images assigned so
    far (counting ``assigned``, the images already in each bucket): every bucket stays within
    about one block of its target, overall and within each stratum."""
    target = bucket_fractions(settings) if fractions is None else fractions
    sizes = np.zeros(len(target)) if assigned is None else assigned.astype(np.float64).copy()
    strata = blocks["stratum"].unique().sort()
    order = pl.DataFrame({"stratum": strata, "s_order": hash_unit(strata, settings.seed, "s")})
    ordered = blocks.with_columns(order=pl.Series(hash_unit(blocks["key"], settings.seed),
                                                  dtype=pl.Float64)).join(
        order, on="stratum").sort("s_order", "n", "order", descending=[False, True, False])
    tie = hash_unit(range(len(target)), settings.seed, "b") * 1e-9
    bucket = np.empty(ordered.height, np.int64)
    for i, n in enumerate(ordered["n"].to_numpy()):
        deficit = target * (sizes.sum() + n) - sizes
        bucket[i] = int(np.argmax(deficit / target + tie))
        sizes[bucket[i]] += n
    return ordered.with_columns(bucket=pl.Series(bucket, dtype=pl.Int64)).drop(
        "order", "s_order")


def beats(n_buckets: int) -> np.ndarray:
    """``beats[b, a]``: an image of bucket b wins a close pair against one of bucket a. The
    test split beats every fold; folds play a balanced round robin."""
    k = n_buckets - 1
    out = np.zeros((n_buckets, n_buckets), bool)
    out[0, 1:] = True
    for f in range(k):
        for g in range(k):
            d = (g - f) % k
            out[f + 1, g + 1] = 0 < d < k / 2 or (d == k / 2 and f < g)
    return out


def buffer_losers(xyz: np.ndarray, bucket: np.ndarray, tier: np.ndarray,
                  min_distance_km: float) -> np.ndarray:
    """Per image, the bucket that wins against it within ``min_distance_km`` (-1: none).

    The higher ``tier`` wins (old images over new, images in their group's anchor block
    over strays), then the bucket's ``beats``; one KD-tree per (bucket, tier), queried by
    the images it beats: O(k N log N), no pair lists."""
    lost = np.full(len(bucket), -1, np.int64)
    if min_distance_km <= 0 or len(bucket) < 2:
        return lost
    win = beats(int(bucket.max()) + 1)
    radius = km_to_chord(min_distance_km)
    for b in range(win.shape[0]):
        for level in np.unique(tier):
            members = (bucket == b) & (tier == level)
            target = (bucket != b) & (lost < 0) & (
                (tier < level) | ((tier == level) & win[b, bucket]))
            if not members.any() or not target.any():
                continue
            d, _ = cKDTree(xyz[members]).query(xyz[target], k=1, distance_upper_bound=radius)
            lost[np.flatnonzero(target)[d < radius]] = b
    return lost


# --- the split ---------------------------------------------------------------------------------

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


def _with_blocks(table: pl.DataFrame, settings: SplitSettings) -> pl.DataFrame:
    """Rows with ``unit`` (capture-group key or the image id), ``block`` of the image and
    ``anchor`` (the block holding most of its unit's images; ties: the smallest code)."""
    smallest = float(bucket_fractions(settings).min())
    cap = max(1, int(table.height * smallest / BLOCKS_PER_BUCKET))
    block = adaptive_blocks(table["lat_deg"].to_numpy(), table["lon_deg"].to_numpy(),
                            settings, cap)
    rows = table.with_columns(
        unit=pl.when(pl.col("group_id").is_null()).then(pl.col("image_id"))
        .otherwise(pl.col("source") + pl.lit("\x1f") + pl.col("group_id")),
        block=pl.Series(block))
    anchors = rows.group_by("unit", "block").len().sort(
        "unit", "len", "block", descending=[False, True, False]).unique(
        "unit", keep="first").select("unit", anchor="block")
    return rows.join(anchors, on="unit", how="left")


def _priors(rows: pl.DataFrame, previous: pl.DataFrame | None) -> pl.DataFrame:
    """``old`` (the image's previous bucket or null) and ``prior`` (the bucket its unit or
    anchor block already has)."""
    if previous is None or previous.height == 0:
        return rows.with_columns(old=pl.lit(None, pl.Int64), prior=pl.lit(None, pl.Int64))
    old = previous.select("image_id", old=pl.when(pl.col("split") == TEST).then(0)
                          .otherwise(pl.col("fold") + 1).cast(pl.Int64))
    rows = rows.join(old, on="image_id", how="left")
    units = rows.group_by("unit").agg(n_old=pl.col("old").drop_nulls().n_unique(),
                                      unit_prior=pl.col("old").drop_nulls().min())
    if units["n_old"].max() > 1:
        raise InputError("the previous splits file puts one capture group in several splits: "
                         f"delete {layout.in_datasets(layout.SPLITS)} to rebuild splits")
    blocks = rows.filter(pl.col("old").is_not_null()).group_by("anchor", "old").len().sort(
        "anchor", "len", "old", descending=[False, True, False]).unique(
        "anchor", keep="first").select("anchor", block_prior="old")
    return rows.join(units, on="unit", how="left").join(blocks, on="anchor", how="left") \
        .with_columns(prior=pl.coalesce("unit_prior", "block_prior")) \
        .drop("n_old", "unit_prior", "block_prior")


def _with_leak_group(rows: pl.DataFrame) -> pl.DataFrame:
    anchors = rows.select("anchor").unique()
    ids = pl.Series(block_ids(anchors["anchor"].to_numpy()), dtype=pl.String)
    return rows.join(anchors.with_columns(leak_group=ids), on="anchor")


def _place(rows: pl.DataFrame, settings: SplitSettings, complete: bool,
           fractions: np.ndarray | None = None) -> pl.DataFrame:
    """``bucket`` per row: the prior, else the anchor block's assignment."""
    n_buckets = settings.k_folds + 1
    prior = rows["prior"].drop_nulls().to_numpy()
    fresh = rows.filter(pl.col("prior").is_null()).group_by("anchor").agg(
        n=pl.len(), key=pl.col("leak_group").first())
    if fresh.height == 0:
        return rows.with_columns(bucket=pl.col("prior"))
    fresh = fresh.with_columns(stratum=pl.Series(
        block_stratum(fresh["anchor"].to_numpy(), settings.stratify_level)))
    placed = assign_buckets(fresh, settings, np.bincount(prior, minlength=n_buckets),
                            fractions)
    if complete and placed["bucket"].n_unique() < n_buckets:
        raise InputError(
            f"k_folds={settings.k_folds} needs images in at least {n_buckets} "
            f"places (test + {settings.k_folds} folds), but the images fill only "
            f"{placed['bucket'].n_unique()} of them: lower k_folds, or add images")
    return rows.join(placed.select("anchor", "bucket"), on="anchor",
                     how="left").with_columns(bucket=pl.coalesce("prior", "bucket"))


def _buffer(rows: pl.DataFrame, settings: SplitSettings) -> np.ndarray:
    xyz = unit_vectors(rows["lat_deg"].to_numpy(), rows["lon_deg"].to_numpy())
    tier = 2 * rows["old"].is_not_null().to_numpy() + (rows["block"] == rows["anchor"]).to_numpy()
    return buffer_losers(xyz, rows["bucket"].to_numpy(), tier.astype(np.int64),
                         settings.min_distance_km)


def _compensated(rows: pl.DataFrame, lost: np.ndarray, settings: SplitSettings) -> np.ndarray:
    """Target fractions raised for the buckets that lost more to the buffer in a first pass,
    so that the kept images, not the assigned ones, meet the targets."""
    n_buckets = settings.k_folds + 1
    bucket = rows["bucket"].to_numpy()
    assigned = np.bincount(bucket, minlength=n_buckets).astype(np.float64)
    kept = np.bincount(bucket[lost < 0], minlength=n_buckets).astype(np.float64)
    keep_rate = np.where(assigned > 0, kept / np.maximum(assigned, 1), 1.0)
    raised = bucket_fractions(settings) / np.maximum(keep_rate, 0.05)
    return raised / raised.sum()


def make_splits(manifest: pl.DataFrame, settings: SplitSettings,
                previous: pl.DataFrame | None = None) -> SplitResult:
    """Assign every kept image to the test split or a fold, or exclude it (module docstring).

    ``manifest``: kept images with image_id, source, group_id, lat_deg, lon_deg. ``previous``:
    the last splits table (image_id, split, fold), the authority for the images it holds.
    """
    table = _check_table(manifest)
    complete = previous is None or previous.height == 0
    rows = _with_leak_group(_priors(_with_blocks(table, settings), previous))
    placed = _place(rows, settings, complete)
    lost = _buffer(placed, settings)
    if (lost >= 0).any():  # second pass: targets corrected for the buffer's losses
        placed = _place(rows, settings, complete, _compensated(placed, lost, settings))
        lost = _buffer(placed, settings)
    return _result(placed.with_columns(lost=pl.Series(lost)), settings)


def _result(rows: pl.DataFrame, settings: SplitSettings) -> SplitResult:
    reason = [f"within min_distance_km ({settings.min_distance_km} km) of {bucket_name(b)}"
              for b in range(settings.k_folds + 1)]
    excluded = rows.filter(pl.col("lost") >= 0).select(
        "image_id", reason=pl.col("lost").replace_strict(list(range(len(reason))), reason,
                                                         return_dtype=pl.String))
    bucket = pl.col("bucket")
    splits = rows.filter(pl.col("lost") < 0).select(
        "image_id", "group_id",
        pl.when(bucket == 0).then(pl.lit(TEST)).otherwise(pl.lit(TRAIN)).alias("split"),
        pl.when(bucket == 0).then(pl.lit(-1)).otherwise(bucket - 1).cast(pl.Int64)
        .alias("fold"), "leak_group").sort("image_id")
    return SplitResult(splits, excluded.sort("image_id"))


# --- files -------------------------------------------------------------------------------------

def settings_dict(settings: SplitSettings) -> dict:
    return {"k_folds": settings.k_folds, "test_fraction": settings.test_fraction,
            "min_distance_km": settings.min_distance_km, "seed": settings.seed,
            "stratify_level": settings.stratify_level, "block_km": settings.block_km,
            "size_tolerance": settings.size_tolerance}


def read_previous(out_dir: Path, settings: SplitSettings) -> pl.DataFrame | None:
    """The last splits table when it was made with the same settings, else None."""
    meta, table = out_dir / layout.SPLITS_META, out_dir / layout.SPLITS
    if not (meta.exists() and table.exists()):
        return None
    if json.loads(meta.read_text()).get("settings") != settings_dict(settings):
        return None
    return pl.read_parquet(table, columns=["image_id", "split", "fold"])


def build_splits(manifest: pl.DataFrame, settings: SplitSettings, out_dir: Path,
                 incremental: bool = True) -> tuple[SplitResult, dict, dict]:
    """Make the splits (keeping the previous file's assignments) and write, atomically,
    ``splits.parquet``, ``splits_excluded.parquet`` and ``splits.json`` (settings, the
    leakage report and the proportion check, computed once here; the checks read them).
    Returns (result, report, figure data)."""
    from geo_assets.split_checks import leakage_report

    out_dir.mkdir(parents=True, exist_ok=True)
    previous = read_previous(out_dir, settings) if incremental else None
    result = make_splits(manifest, settings, previous)
    joined = result.splits.join(manifest.select("image_id", "source", "lat_deg", "lon_deg"),
                                on="image_id")
    report, figures = leakage_report(joined, settings, manifest.height)
    report["incremental"] = previous is not None
    report["kept_from_previous"] = 0 if previous is None else int(
        result.splits.join(previous.select("image_id"), on="image_id", how="semi").height)
    report["excluded"] = result.excluded.height
    for name, frame in ((layout.SPLITS, result.splits),
                        (layout.SPLITS_EXCLUDED, result.excluded)):
        with atomic_path(out_dir / name) as tmp:
            frame.write_parquet(tmp)
    report["splits_sha256"] = sha256_file(out_dir / layout.SPLITS)
    meta = {"settings": settings_dict(settings), "report": report}
    write_json_atomic(out_dir / layout.SPLITS_META, meta, sort_keys=False)
    return result, report, figures
