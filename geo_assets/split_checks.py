"""Checks of a split: leakage (capture groups and close images across buckets) and proportions.

Leakage without pair lists: one KD-tree per bucket (test, fold 0..k-1), queried (bounded) with every
image of the other buckets for its nearest neighbour, gives each image's distance to the
nearest image of another bucket: O(k N log N) time, O(N) memory. A leak is an image with such
a neighbour closer than ``min_distance_km``; a capture group leaks when it spans buckets.
``build_splits`` computes the report once and stores it in ``splits.json`` with the SHA-256 of
the splits file it describes; the asset checks read it from there.

Proportions: each bucket's share of the images and of the capture groups (a group counted in
the bucket of its images; an image without a group counts as its own group) against the
target (test: ``test_fraction``; each fold: an equal share of the rest), within the relative
``size_tolerance``. Outside it: warnings, never silence.
"""

from __future__ import annotations

import numpy as np
import polars as pl
from scipy.spatial import cKDTree

from geo_assets.settings import SplitSettings
from geo_assets.sphere import chord_to_km, km_to_chord, unit_vectors
from geo_assets.splits import TEST, bucket_fractions, bucket_name

REPORT_BOUND_FACTOR = 20  # fold-to-other-bucket distances are reported up to 20 x min distance


def buckets_of(table: pl.DataFrame) -> np.ndarray:
    """0 for the test split, 1 + fold for the folds."""
    return np.where(table["split"].to_numpy() == TEST, 0, table["fold"].to_numpy() + 1)


def nearest_other_bucket(xyz: np.ndarray, bucket: np.ndarray,
                         bound_km: float) -> tuple[np.ndarray, np.ndarray]:
    """Per image: distance (km) to the nearest image of another bucket when closer than
    ``bound_km`` (else inf), and that image's row (-1: none). Bounded queries stay cheap
    where the other buckets are far away."""
    dist = np.full(len(bucket), np.inf)
    other = np.full(len(bucket), -1, np.int64)
    bound = km_to_chord(bound_km)
    for b in np.unique(bucket):
        members = np.flatnonzero(bucket == b)
        rest = np.flatnonzero(bucket != b)
        if len(rest) == 0:
            continue
        d, j = cKDTree(xyz[members]).query(xyz[rest], k=1, distance_upper_bound=bound)
        closer = d < dist[rest]
        dist[rest[closer]] = d[closer]
        other[rest[closer]] = members[j[closer]]
    finite = np.isfinite(dist)
    dist[finite] = chord_to_km(dist[finite])
    return dist, other


def find_leaks(table: pl.DataFrame, min_distance_km: float, examples: int = 5) -> dict:
    """Capture groups and close images that cross buckets (test / fold f): should be none.

    ``table``: image_id, source, group_id, lat_deg, lon_deg, split, fold.
    """
    xyz = unit_vectors(table["lat_deg"].to_numpy(), table["lon_deg"].to_numpy())
    bucket = buckets_of(table)
    return _leaks(table, bucket, *nearest_other_bucket(xyz, bucket, 2 * min_distance_km),
                  min_distance_km, examples)


def test_to_train_km(xyz: np.ndarray, bucket: np.ndarray) -> np.ndarray:
    """Distance (km) from each test image to its nearest training image (unbounded: the
    report's histogram and median)."""
    test, train = xyz[bucket == 0], xyz[bucket > 0]
    if len(test) == 0 or len(train) == 0:
        return np.full(len(test), np.inf)
    return chord_to_km(cKDTree(train).query(test, k=1)[0])


def _leaks(table, bucket, dist, other, min_distance_km, examples) -> dict:
    t = table.with_columns(bucket=pl.Series(bucket))
    crossing = t.filter(pl.col("group_id").is_not_null()).group_by("source", "group_id").agg(
        n_buckets=pl.col("bucket").n_unique()).filter(pl.col("n_buckets") > 1)
    bad = np.flatnonzero(dist < min_distance_km)
    ids = t["image_id"].to_numpy()
    return {"groups_crossing": crossing.height,
            "group_examples": crossing["group_id"].head(examples).to_list(),
            "images_near_other_split": len(bad),
            "pair_examples": [[str(ids[i]), str(ids[other[i]]), float(dist[i])]
                              for i in bad[:examples]]}


def proportions(table: pl.DataFrame, settings: SplitSettings, n_input: int | None = None) -> dict:
    """Shares of images and capture groups per bucket against the targets, and warnings."""
    t = table.with_columns(bucket=pl.Series(buckets_of(table)), unit=pl.when(
        pl.col("group_id").is_null()).then(pl.col("image_id"))
        .otherwise(pl.col("source") + pl.lit("\x1f") + pl.col("group_id")))
    target = bucket_fractions(settings)
    n_buckets = settings.k_folds + 1
    images = np.bincount(t["bucket"].to_numpy(), minlength=n_buckets)[:n_buckets]
    groups = t.group_by("bucket").agg(n=pl.col("unit").n_unique())
    group_counts = np.zeros(n_buckets, np.int64)
    group_counts[groups["bucket"].to_numpy()] = groups["n"].to_numpy()
    warnings = []
    for what, counts in (("images", images), ("capture groups", group_counts)):
        share = counts / max(counts.sum(), 1)
        for b in range(n_buckets):
            if abs(share[b] - target[b]) > settings.size_tolerance * target[b]:
                warnings.append(f"{bucket_name(b)} holds {share[b]:.1%} of the {what} "
                                f"({counts[b]}), target {target[b]:.1%} "
                                f"+/- {settings.size_tolerance:.0%}")
    dropped = 0 if n_input is None else n_input - table.height
    return {"target_share": [round(float(x), 6) for x in target],
            "image_share": [round(float(x), 6) for x in images / max(images.sum(), 1)],
            "images": images.tolist(), "capture_groups": group_counts.tolist(),
            "buffer_dropped": dropped, "tolerance": settings.size_tolerance,
            "within_tolerance": not warnings, "warnings": warnings}


def leakage_report(table: pl.DataFrame, settings: SplitSettings,
                   n_input: int | None = None) -> tuple[dict, dict]:
    """(report, figure data): counts per bucket, nearest cross-split distances, leaks,
    proportions. ``table``: splits joined with the manifest (source, lat_deg, lon_deg)."""
    bucket = buckets_of(table)
    xyz = unit_vectors(table["lat_deg"].to_numpy(), table["lon_deg"].to_numpy())
    dist, other = nearest_other_bucket(xyz, bucket, REPORT_BOUND_FACTOR
                                       * max(settings.min_distance_km, 1.0))
    test_to_train = test_to_train_km(xyz, bucket)
    fold_min = {str(f): (float(dist[bucket == f + 1].min()) if (bucket == f + 1).any()
                         and np.isfinite(dist[bucket == f + 1]).any() else None)
                for f in range(settings.k_folds)}
    per = table.with_columns(bucket=pl.Series(bucket)).group_by("split", "fold").agg(
        images=pl.len(), capture_groups=pl.struct("source", "group_id").n_unique(),
        leakage_groups=pl.col("leak_group").n_unique()).sort("split", "fold")
    finite = test_to_train[np.isfinite(test_to_train)]
    report = {"per_split": per.to_dicts(),
              "nearest_test_to_train_km": {
                  "min": float(finite.min()) if len(finite) else None,
                  "median": float(np.median(finite)) if len(finite) else None},
              "nearest_fold_to_other_folds_km_min": fold_min,
              "min_distance_km": settings.min_distance_km,
              **_leaks(table, bucket, dist, other, settings.min_distance_km, 5),
              "proportions": proportions(table, settings, n_input)}
    return report, {"test_to_train_km": test_to_train, "per_split": per}
