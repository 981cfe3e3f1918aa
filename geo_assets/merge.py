"""The merge: every done cell manifest into ``manifests/image_manifest.parquet``, with
cross-cell spatial dedup and the per-cell version table (``manifests/cell_versions.parquet``)
that lineage reads. Same cell files in, same bytes out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from geo_assets import filters, layout
from geo_assets.manifest import (
    CELL_VERSIONS_SCHEMA,
    DropReason,
    empty_manifest,
    table_to_parquet_bytes,
)
from geo_assets.manifest import (
    COLUMNS as MANIFEST_COLUMNS,
)
from geo_assets.settings import FilterSettings
from geo_assets.storage import DataRoot, sha256_hex


@dataclass(frozen=True)
class MergeResult:
    """The merged manifest; iterates as ``(path, sha256)``."""

    path: str
    sha256: str                         # content hash of the merged file: the data version
    versions_path: str
    n_rows: int
    n_kept: int
    n_cells: int
    n_cross_cell_dropped: int
    n_duplicate_ids: int

    def __iter__(self):
        return iter((self.path, self.sha256))

    def metadata(self) -> dict:
        return {"path": self.path, "sha256": self.sha256, "rows": self.n_rows,
                "kept": self.n_kept, "cells": self.n_cells,
                "cross_cell_duplicates_dropped": self.n_cross_cell_dropped,
                "duplicate_image_ids_removed": self.n_duplicate_ids}


def done_cell_manifests(root: DataRoot) -> list[str]:
    """Relative paths of cell manifests whose stats file exists (the cell is done)."""
    done = set(root.glob(f"{layout.CELLS_DIR}/*/*{layout.CELL_STATS_SUFFIX}"))
    return [p for p in root.glob(f"{layout.CELLS_DIR}/*/*{layout.CELL_MANIFEST_SUFFIX}")
            if p.removesuffix(layout.CELL_MANIFEST_SUFFIX) + layout.CELL_STATS_SUFFIX in done]


def merge_manifests(root: DataRoot, *,
                    min_distance_m: float | None = None) -> MergeResult:
    """Merge every done cell manifest (polars, lazy), dedup across cells, write the merged
    manifest and the per-cell version table; same cell files in, same bytes out."""
    if min_distance_m is None:
        min_distance_m = FilterSettings().min_distance_m
    paths = done_cell_manifests(root)
    frame = _scan(root, paths)
    n_before = frame.height
    frame = (frame.sort(["image_id", "kept", "cell_id"], descending=[False, True, False])
             .unique(subset="image_id", keep="first", maintain_order=True))
    frame, n_cross = cross_cell_dedup(frame, min_distance_m)
    frame = frame.sort("image_id")
    data = table_to_parquet_bytes(frame.to_arrow())
    root.write_bytes(layout.IMAGE_MANIFEST, data)
    versions = _versions(root, paths, frame)
    root.write_bytes(layout.CELL_VERSIONS, table_to_parquet_bytes(versions, CELL_VERSIONS_SCHEMA))
    return MergeResult(root.uri(layout.IMAGE_MANIFEST), sha256_hex(data),
                       root.uri(layout.CELL_VERSIONS), frame.height,
                       int(frame["kept"].sum()) if frame.height else 0, len(paths), n_cross,
                       n_before - frame.height)


def _scan(root: DataRoot, paths: list[str]):
    import polars as pl

    if not paths:
        return pl.from_arrow(empty_manifest())
    lazy = pl.scan_parquet([root.uri(p) for p in paths],
                           storage_options=root.storage_options or None)
    return lazy.select(MANIFEST_COLUMNS).collect()


def near_partition_edge(min_distance_m: float):
    """Boolean expression: the kept row may have an image of another (cell, source) partition
    within ``min_distance_m``: it lies within that distance of its cell's edge, or its cell
    holds images of several sources. Every other row can neither be displaced nor displace
    one, so the cross-cell dedup looks at these rows only (same result)."""
    import polars as pl

    from geo_assets.sphere import KM_PER_DEG

    lat, lon = pl.col("lat_deg"), pl.col("lon_deg")
    level = pl.col("cell_id").str.len_chars()
    dlat, dlon = 180.0 / (2.0 ** level), 360.0 / (2.0 ** level)
    row = ((lat + 90.0) / dlat).floor()
    col = ((lon + 180.0) / dlon).floor()
    to_lat_edge = pl.min_horizontal(lat + 90.0 - row * dlat, (row + 1) * dlat - lat - 90.0)
    to_lon_edge = pl.min_horizontal(lon + 180.0 - col * dlon, (col + 1) * dlon - lon - 180.0)
    # cos at the cell's pole-ward edge: a lower bound of the east-west metres per degree
    cos_edge = ((lat.abs() + dlat).clip(upper_bound=90.0) * (3.141592653589793 / 180)).cos()
    margin_deg = 2.0 * min_distance_m / 1000.0 / KM_PER_DEG  # twice: rounding never matters
    return ((to_lat_edge <= margin_deg) | (to_lon_edge * cos_edge <= margin_deg)
            | (pl.col("source").n_unique().over("cell_id") > 1))


def cross_cell_dedup(frame, min_distance_m: float, edges_only: bool = True):
    """(frame with the displaced rows dropped as duplicate_location, their count).
    ``edges_only``: look only at the rows ``near_partition_edge`` (same result, less work)."""
    import polars as pl

    if frame.height == 0 or min_distance_m <= 0:
        return frame, 0
    frame = frame.with_row_index("_row")
    kept = frame.filter(pl.col("kept"))
    if edges_only:
        kept = kept.filter(near_partition_edge(min_distance_m))
    kept = (kept
            .sort(["cell_id", "source", pl.col("captured_at").is_null(), "captured_at",
                   "image_id"], nulls_last=True))
    blocker = filters.cross_partition_dedup(
        kept["lat_deg"].to_numpy(), kept["lon_deg"].to_numpy(),
        (kept["cell_id"] + "/" + kept["source"]).to_list(), min_distance_m)
    hit = np.flatnonzero(blocker >= 0)
    if len(hit) == 0:
        return frame.drop("_row"), 0
    ids, cells = kept["image_id"].to_list(), kept["cell_id"].to_list()
    errors = [f"within {min_distance_m:g} m of {ids[blocker[i]]} kept in cell "
              f"{cells[blocker[i]]}" for i in hit]
    update = pl.DataFrame({"_row": kept["_row"].gather(hit), "_err": errors})
    frame = frame.join(update, on="_row", how="left", maintain_order="left")
    dropped = pl.col("_err").is_not_null()
    frame = frame.with_columns(
        kept=pl.when(dropped).then(False).otherwise(pl.col("kept")),
        drop_reason=pl.when(dropped).then(pl.lit(str(DropReason.DUPLICATE_LOCATION)))
        .otherwise(pl.col("drop_reason")),
        error=pl.when(dropped).then(pl.col("_err")).otherwise(pl.col("error")))
    return frame.drop("_row", "_err"), len(hit)


def _versions(root: DataRoot, paths: list[str], frame):
    """The per-cell version table: sha256 of each cell file, its rows and kept rows in the
    merged manifest."""
    import polars as pl
    import pyarrow as pa

    counts = {(r["cell_id"], r["source"]): r for r in frame.group_by(["cell_id", "source"]).agg(
        n_rows=pl.len(), n_kept=pl.col("kept").sum()).to_dicts()}
    rows = []
    for p in paths:
        source, file = p.split("/")[-2:]
        name = file.removesuffix(layout.CELL_MANIFEST_SUFFIX)
        c = counts.get((name, source), {"n_rows": 0, "n_kept": 0})
        rows.append({"cell_id": name, "source": source,
                     "version": root.sha256(p), "n_rows": int(c["n_rows"]),
                     "n_kept": int(c["n_kept"] or 0)})
    rows.sort(key=lambda r: (r["cell_id"], r["source"]))
    return pa.Table.from_pylist(rows, schema=CELL_VERSIONS_SCHEMA)
