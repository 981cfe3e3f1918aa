"""The merge: every done cell manifest into ``manifests/image_manifest.parquet``, with
cross-cell spatial dedup and the per-cell version table (``manifests/cell_versions.parquet``)
that lineage reads. Same cell files in, same bytes out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow.parquet as pq

from geo_assets import filters, layout
from geo_assets.manifest import (
    CELL_VERSIONS_SCHEMA,
    MANIFEST_SCHEMA,
    DropReason,
    empty_manifest,
    table_to_parquet_bytes,
)
from geo_assets.manifest import (
    COLUMNS as MANIFEST_COLUMNS,
)
from geo_assets.progress import track
from geo_assets.settings import FilterSettings
from geo_assets.storage import DataRoot


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


DEDUP_COLUMNS = ["image_id", "source", "cell_id", "lat_deg", "lon_deg", "captured_at", "kept"]
ROW_GROUP_ROWS = 1 << 17
FILES_PER_READ = 128  # cell files read (and written) together: bounded memory, few calls


def merge_manifests(root: DataRoot, *,
                    min_distance_m: float | None = None) -> MergeResult:
    """Merge every done cell manifest, dedup across cells, write the merged manifest and the
    per-cell version table; same cell files in, same bytes out.

    Streams: the duplicate-id and cross-cell decisions are made on a lazy scan of a few
    columns (the dedup only on rows near cell edges), then the cells are written one after
    the other, in cell order, through one Parquet writer: memory holds the decisions and one
    row group, not the whole manifest."""
    if min_distance_m is None:
        min_distance_m = FilterSettings().min_distance_m
    paths = done_cell_manifests(root)
    (n_repeated, winners), updates = _decisions(root, paths, min_distance_m)
    counts: dict[tuple[str, str], tuple[int, int]] = {}
    n_rows = n_kept = 0
    with root.open_atomic(layout.IMAGE_MANIFEST) as f:
        writer = pq.ParquetWriter(f, MANIFEST_SCHEMA, compression="zstd")
        pending = []
        for part in _cells(root, paths, winners, updates):
            pending.append(part)
            n_rows += part.height
            n_kept += int(part["kept"].sum())
            for (cell, source), sub in part.group_by(["cell_id", "source"]):
                counts[(cell, source)] = (sub.height, int(sub["kept"].sum()))
            if sum(x.height for x in pending) >= ROW_GROUP_ROWS:
                writer.write_table(_arrow(pending), row_group_size=ROW_GROUP_ROWS)
                pending = []
        if pending or n_rows == 0:
            writer.write_table(_arrow(pending) if pending else empty_manifest())
        writer.close()
    versions = _versions(root, paths, counts)
    root.write_bytes(layout.CELL_VERSIONS, table_to_parquet_bytes(versions, CELL_VERSIONS_SCHEMA))
    return MergeResult(root.uri(layout.IMAGE_MANIFEST), root.sha256(layout.IMAGE_MANIFEST),
                       root.uri(layout.CELL_VERSIONS), n_rows, n_kept, len(paths),
                       updates.height, n_repeated)


def _arrow(parts):
    import polars as pl

    return pl.concat(parts).to_arrow().cast(MANIFEST_SCHEMA)


def _scan(root: DataRoot, paths: list[str]):
    import polars as pl

    return pl.scan_parquet([root.uri(p) for p in paths],
                           storage_options=root.storage_options or None,
                           include_file_paths="_path")


def _decisions(root: DataRoot, paths: list[str], min_distance_m: float):
    """((rows dropped as repeated ids, the winning file of each repeated id: image_id +
    _path), cross-cell updates: image_id + _err). A repeated image id keeps its kept row
    first, then its smallest cell."""
    import polars as pl

    if not paths:
        empty = pl.DataFrame(schema={"image_id": pl.String, "_path": pl.String})
        return (0, empty), pl.DataFrame(schema={"image_id": pl.String, "_err": pl.String})
    slim = _scan(root, paths).select(*DEDUP_COLUMNS, "_path")
    ranked = slim.sort(["image_id", "kept", "cell_id", "_path"],
                       descending=[False, True, False, False]).with_columns(
        _rank=pl.int_range(pl.len()).over("image_id"))
    n_losers = ranked.filter(pl.col("_rank") > 0).select(pl.len()).collect().item()
    losers = ranked.filter((pl.col("_rank") == 0) & (pl.len().over("image_id") > 1)) \
        .select("image_id", "_path").collect()  # the winning file of each repeated id
    edge = ranked.filter((pl.col("_rank") == 0) & pl.col("kept")) \
        .filter(near_partition_edge(min_distance_m)).drop("_rank", "_path").collect()
    return (n_losers, losers), _cross_updates(edge, min_distance_m)


def _cells(root: DataRoot, paths: list[str], winners, updates):
    """The cell files' rows, less the duplicate-id losers, with the cross-cell drops applied,
    in path order (sorted: cells, then sources), ``FILES_PER_READ`` files at a time."""
    import polars as pl

    paths = sorted(paths)
    losers_of = winners.rename({"_path": "_win"})
    for start in range(0, len(paths), FILES_PER_READ):
        frame = _scan(root, paths[start:start + FILES_PER_READ]) \
            .select(*MANIFEST_COLUMNS, "_path").collect()
        frame = frame.sort(["_path", "image_id", "kept"], descending=[False, False, True]) \
            .unique(["_path", "image_id"], keep="first", maintain_order=True)
        lost = frame.select("_path", "image_id").join(losers_of, on="image_id") \
            .filter(pl.col("_win") != pl.col("_path")).drop("_win")
        if lost.height:
            frame = frame.join(lost, on=["_path", "image_id"], how="anti",
                               maintain_order="left")
        yield _apply(frame.drop("_path"), updates)


def _apply(frame, updates):
    import polars as pl

    if updates.height == 0:
        return frame
    frame = frame.join(updates, on="image_id", how="left", maintain_order="left")
    dropped = pl.col("_err").is_not_null() & pl.col("kept")
    return frame.with_columns(
        kept=pl.when(dropped).then(False).otherwise(pl.col("kept")),
        drop_reason=pl.when(dropped).then(pl.lit(str(DropReason.DUPLICATE_LOCATION)))
        .otherwise(pl.col("drop_reason")),
        error=pl.when(dropped).then(pl.col("_err")).otherwise(pl.col("error"))).drop("_err")


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


def _cross_updates(kept, min_distance_m: float):
    """image_id + _err of the kept rows displaced by an earlier kept image of another
    (cell, source) within ``min_distance_m`` (greedy in cell, source, capture, id order)."""
    import polars as pl

    none = pl.DataFrame(schema={"image_id": pl.String, "_err": pl.String})
    if kept.height == 0 or min_distance_m <= 0:
        return none
    kept = kept.sort(["cell_id", "source", pl.col("captured_at").is_null(), "captured_at",
                      "image_id"], nulls_last=True)
    blocker = filters.cross_partition_dedup(
        kept["lat_deg"].to_numpy(), kept["lon_deg"].to_numpy(),
        (kept["cell_id"] + "/" + kept["source"]).to_list(), min_distance_m)
    hit = np.flatnonzero(blocker >= 0)
    if len(hit) == 0:
        return none
    ids, cells = kept["image_id"].to_list(), kept["cell_id"].to_list()
    return pl.DataFrame({"image_id": kept["image_id"].gather(hit),
                         "_err": [f"within {min_distance_m:g} m of {ids[blocker[i]]} kept in "
                                  f"cell {cells[blocker[i]]}" for i in hit]})


def cross_cell_dedup(frame, min_distance_m: float, edges_only: bool = True):
    """(frame with the displaced rows dropped as duplicate_location, their count).
    ``edges_only``: look only at the rows ``near_partition_edge`` (same result, less work)."""
    import polars as pl

    kept = frame.filter(pl.col("kept"))
    if edges_only:
        kept = kept.filter(near_partition_edge(min_distance_m))
    updates = _cross_updates(kept, min_distance_m)
    return _apply(frame, updates), updates.height


def _versions(root: DataRoot, paths: list[str], counts: dict):
    """The per-cell version table: sha256 of each cell file, its rows and kept rows in the
    merged manifest."""
    import pyarrow as pa

    rows = []
    for p in track(paths, desc="merge: cell versions", unit="file"):
        source, file = p.split("/")[-2:]
        name = file.removesuffix(layout.CELL_MANIFEST_SUFFIX)
        n, k = counts.get((name, source), (0, 0))
        rows.append({"cell_id": name, "source": source, "version": root.sha256(p),
                     "n_rows": int(n), "n_kept": int(k)})
    rows.sort(key=lambda r: (r["cell_id"], r["source"]))
    return pa.Table.from_pylist(rows, schema=CELL_VERSIONS_SCHEMA)
