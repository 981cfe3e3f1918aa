"""The merge: every done cell manifest into ``manifests/image_manifest.parquet``, with
cross-cell spatial dedup and the per-cell version table (``manifests/cell_versions.parquet``)
that lineage reads. Same cell files in, same bytes out, whether merged from scratch or
incrementally (cells unchanged since the last merge copied from it: ``geo_assets.merge_state``).
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
from geo_assets.merge_state import CellState, MergeState, decision_digests, read_state
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
    n_cells_reused: int = 0             # cell files whose rows were copied from the last merge
    n_cells_merged: int = 0             # cell files read and decided again

    def __iter__(self):
        return iter((self.path, self.sha256))

    def metadata(self) -> dict:
        return {"path": self.path, "sha256": self.sha256, "rows": self.n_rows,
                "kept": self.n_kept, "cells": self.n_cells,
                "cross_cell_duplicates_dropped": self.n_cross_cell_dropped,
                "duplicate_image_ids_removed": self.n_duplicate_ids,
                "cells_reused": self.n_cells_reused, "cells_merged": self.n_cells_merged}


def done_cell_manifests(root: DataRoot) -> list[str]:
    """Relative paths of cell manifests whose stats file exists (the cell is done)."""
    done = set(root.glob(f"{layout.CELLS_DIR}/*/*{layout.CELL_STATS_SUFFIX}"))
    return [p for p in root.glob(f"{layout.CELLS_DIR}/*/*{layout.CELL_MANIFEST_SUFFIX}")
            if p.removesuffix(layout.CELL_MANIFEST_SUFFIX) + layout.CELL_STATS_SUFFIX in done]


DEDUP_COLUMNS = ["image_id", "source", "cell_id", "lat_deg", "lon_deg", "captured_at", "kept"]
ROW_GROUP_ROWS = 1 << 17
FILES_PER_READ = 128  # cell files read (and written) together: bounded memory, few calls


def merge_manifests(root: DataRoot, *, min_distance_m: float | None = None,
                    incremental: bool = True) -> MergeResult:
    """Merge every done cell manifest, dedup across cells, write the merged manifest, the
    per-cell version table and the merge state; same cell files in, same bytes out.

    Streams: the duplicate-id and cross-cell decisions are made on one scan of a few columns
    (the dedup only on rows near cell edges), then the cells are written one after
    the other, in cell order, through one Parquet writer: memory holds the decisions and one
    row group, not the whole manifest. Incremental (``geo_assets.merge_state``): a cell file
    whose bytes and decisions are those of the last merge has its rows copied from the last
    merged manifest; when every cell file is the last merge's, nothing is decided or written
    again."""
    if min_distance_m is None:
        min_distance_m = FilterSettings().min_distance_m
    paths = sorted(done_cell_manifests(root))
    shas = {p: root.sha256(p) for p in track(paths, desc="merge: cell versions", unit="file")}
    state = read_state(root, min_distance_m) if incremental else None
    old = state.cells if state else {}
    if state and list(old) == paths and all(old[p].version == shas[p] for p in paths):
        new_state, reuse = state, old  # the last merge's cell files: nothing to decide or write
    else:
        (n_repeated, winners, repeated), updates = _decisions(root, paths, min_distance_m)
        digests = decision_digests(paths, repeated, updates)
        reuse = {p: old[p] for p in paths
                 if p in old and (old[p].version, old[p].decisions) == (shas[p], digests[p])}
        new_state = _write(root, paths, (winners, updates.drop("_path"), reuse),
                           (shas, digests), (min_distance_m, updates.height, n_repeated))
    versions = _versions(paths, shas, new_state.counts)
    root.write_bytes(layout.CELL_VERSIONS, table_to_parquet_bytes(versions, CELL_VERSIONS_SCHEMA))
    root.write_bytes(layout.MERGE_STATE, new_state.to_json())  # after the manifest it describes
    return MergeResult(root.uri(layout.IMAGE_MANIFEST), new_state.manifest_sha256,
                       root.uri(layout.CELL_VERSIONS),
                       sum(c.n_rows for c in new_state.cells.values()), new_state.n_kept,
                       len(paths), new_state.n_cross_cell_dropped, new_state.n_duplicate_ids,
                       len(reuse), len(paths) - len(reuse))


def _write(root: DataRoot, paths: list[str], decided, versions: tuple[dict, dict],
           totals: tuple) -> MergeState:
    """Write the merged manifest cell file by cell file; its new state. ``decided``: winners,
    updates, reuse; ``versions``: shas and decision digests by path; ``totals``: the dedup
    radius, cross-cell drops and repeated-id rows."""
    shas, digests = versions
    counts: dict[tuple[str, str], tuple[int, int]] = {}
    cells: dict[str, CellState] = {}
    n_rows = n_kept = 0
    with root.open_atomic(layout.IMAGE_MANIFEST) as f:
        writer = pq.ParquetWriter(f, MANIFEST_SCHEMA, compression="zstd")
        pending = []
        for parts in _cells(root, paths, *decided):
            for path, part in parts:
                cells[path] = CellState(shas[path], digests[path], n_rows, part.height)
                n_rows += part.height
            part = _concat([part for _, part in parts])
            pending.append(part)
            n_kept += int(part["kept"].sum())
            for (cell, source), sub in part.group_by(["cell_id", "source"]):
                counts[(cell, source)] = (sub.height, int(sub["kept"].sum()))
            if sum(x.height for x in pending) >= ROW_GROUP_ROWS:
                writer.write_table(_arrow(pending), row_group_size=ROW_GROUP_ROWS)
                pending = []
        if pending or n_rows == 0:
            writer.write_table(_arrow(pending) if pending else empty_manifest())
        writer.close()
    return MergeState(totals[0], root.sha256(layout.IMAGE_MANIFEST), n_kept, cells, counts,
                      *totals[1:])


def _concat(parts):
    import polars as pl

    return pl.concat(parts) if parts else empty_frame()


def empty_frame():
    import polars as pl

    return pl.from_arrow(empty_manifest())


def _arrow(parts):
    import polars as pl

    return pl.concat(parts).to_arrow().cast(MANIFEST_SCHEMA)


def _scan(root: DataRoot, paths: list[str]):
    import polars as pl

    uris = {root.uri(p): p for p in paths}  # _path: the path relative to the root
    return pl.scan_parquet(list(uris), storage_options=root.storage_options or None,
                           include_file_paths="_path") \
        .with_columns(pl.col("_path").replace_strict(uris, return_dtype=pl.String))


def _decisions(root: DataRoot, paths: list[str], min_distance_m: float):
    """((rows dropped as repeated ids, the winning file of each repeated id: image_id +
    _path, every file of a repeated id: image_id + _path + _win), cross-cell updates:
    image_id + _err + _path). A repeated image id keeps its kept row first, then its
    smallest cell."""
    import polars as pl

    if not paths:
        empty = pl.DataFrame(schema={"image_id": pl.String, "_path": pl.String})
        return ((0, empty, empty.with_columns(_win=pl.col("_path"))),
                pl.DataFrame(schema={"image_id": pl.String, "_err": pl.String,
                                     "_path": pl.String}))
    slim = _scan(root, paths).select(*DEDUP_COLUMNS, "_path").collect()
    repeats = pl.col("image_id").is_duplicated()  # only these need ranking
    ranked = slim.filter(repeats).sort(["image_id", "kept", "cell_id", "_path"],
                                       descending=[False, True, False, False]).with_columns(
        _rank=pl.int_range(pl.len()).over("image_id"))
    n_losers = ranked.filter(pl.col("_rank") > 0).height
    winners = ranked.filter(pl.col("_rank") == 0).select("image_id", "_path")
    repeated = ranked.select("image_id", "_path").unique().join(
        winners.rename({"_path": "_win"}), on="image_id")  # every file of a repeated id
    edge = pl.concat([slim.filter(~repeats), ranked.filter(pl.col("_rank") == 0).drop("_rank")]) \
        .filter(pl.col("kept")).filter(near_partition_edge(min_distance_m))
    return (n_losers, winners, repeated), _cross_updates(edge, min_distance_m)


def _cells(root: DataRoot, paths: list[str], winners, updates, reuse: dict):
    """Per ``FILES_PER_READ`` cell files (in path order: cells, then sources), their
    (path, rows): the rows less the duplicate-id losers, with the cross-cell drops applied;
    for a file in ``reuse``, its rows copied from the last merged manifest."""
    for start in range(0, len(paths), FILES_PER_READ):
        batch = paths[start:start + FILES_PER_READ]
        rows = _fresh(root, [p for p in batch if p not in reuse], winners, updates)
        rows.update(_reused(root, {p: reuse[p] for p in batch if p in reuse}))
        yield [(p, rows[p]) for p in batch]


def _fresh(root: DataRoot, paths: list[str], winners, updates) -> dict:
    import polars as pl

    if not paths:
        return {}
    frame = _scan(root, paths).select(*MANIFEST_COLUMNS, "_path").collect()
    frame = frame.sort(["_path", "image_id", "kept"], descending=[False, False, True]) \
        .unique(["_path", "image_id"], keep="first", maintain_order=True)
    lost = frame.select("_path", "image_id").join(winners.rename({"_path": "_win"}),
                                                  on="image_id") \
        .filter(pl.col("_win") != pl.col("_path")).drop("_win")
    if lost.height:
        frame = frame.join(lost, on=["_path", "image_id"], how="anti", maintain_order="left")
    frame = _apply(frame, updates)
    out = dict.fromkeys(paths, frame.clear().drop("_path"))  # a file may lose every row
    out.update({p: part.drop("_path")
                for (p,), part in frame.group_by(["_path"], maintain_order=True)})
    return out


def _reused(root: DataRoot, reuse: dict) -> dict:
    """The rows of the ``reuse`` files, read in one slice of the last merged manifest."""
    import polars as pl

    if not reuse:
        return {}
    lo = min(c.start for c in reuse.values())
    hi = max(c.start + c.n_rows for c in reuse.values())
    old = pl.scan_parquet(root.uri(layout.IMAGE_MANIFEST),
                          storage_options=root.storage_options or None) \
        .slice(lo, hi - lo).collect()
    return {p: old.slice(c.start - lo, c.n_rows) for p, c in reuse.items()}


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

    none = pl.DataFrame(schema={"image_id": pl.String, "_err": pl.String,
                                "_path": pl.String})
    if "_path" not in kept.columns:
        kept = kept.with_columns(_path=pl.lit(None, dtype=pl.String))
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
                         "_path": kept["_path"].gather(hit),
                         "_err": [f"within {min_distance_m:g} m of {ids[blocker[i]]} kept in "
                                  f"cell {cells[blocker[i]]}" for i in hit]})


def cross_cell_dedup(frame, min_distance_m: float, edges_only: bool = True):
    """(frame with the displaced rows dropped as duplicate_location, their count).
    ``edges_only``: look only at the rows ``near_partition_edge`` (same result, less work)."""
    import polars as pl

    kept = frame.filter(pl.col("kept"))
    if edges_only:
        kept = kept.filter(near_partition_edge(min_distance_m))
    updates = _cross_updates(kept, min_distance_m).drop("_path")
    return _apply(frame, updates), updates.height


def _versions(paths: list[str], shas: dict, counts: dict):
    """The per-cell version table: sha256 of each cell file, its rows and kept rows in the
    merged manifest."""
    import pyarrow as pa

    rows = []
    for p in paths:
        source, file = p.split("/")[-2:]
        name = file.removesuffix(layout.CELL_MANIFEST_SUFFIX)
        n, k = counts.get((name, source), (0, 0))
        rows.append({"cell_id": name, "source": source, "version": shas[p],
                     "n_rows": int(n), "n_kept": int(k)})
    rows.sort(key=lambda r: (r["cell_id"], r["source"]))
    return pa.Table.from_pylist(rows, schema=CELL_VERSIONS_SCHEMA)
