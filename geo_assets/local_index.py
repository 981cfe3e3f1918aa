"""The local folder's photos that no crawled cell holds: one manifest part per folder.

A crawl cell's manifest holds the folder's photos inside that cell (``ingest_cell``). The
others would be in no manifest at all: photos without a usable location (no EXIF GPS, a bad
sidecar row, an image file that no sidecar row names), photos outside the region's grid (a
boat, another country), and photos in a cell that is not crawled yet. ``write_folder_part``
records each of them once, with its reason (``no_location``, ``invalid_record``,
``outside_region``, ``outside_crawl_cells``), in the folder part
``manifests/cells/local/folder.parquet``; its stats file (``folder.stats.json``) is written
last, as a cell's is, so the merge picks the part up like any done cell. Every photo of the
folder is then in the merged manifest exactly once: kept, or dropped with its reason.

Why one part per folder, built at merge time: listing the folder is O(photos); doing it per
cell would be O(photos x cells). The part depends on the folder's version (its sidecar's
bytes, or its files' paths, sizes and times), the crawled cells and the grid; its stats
record a hash of those inputs, and while they are unchanged the part is neither rebuilt nor
is the folder read. Rows are sorted by image id: same inputs, same bytes. The folder's
parsed photos are kept as well (``use_index``: ``manifests/local/folder_index.parquet``,
keyed by the folder version), so its EXIF is read once per folder version, not by every
crawl run, grid build and merge.

A cell that finishes between the part and the merge leaves its photos in both files; the
merge keeps one row per image id (the kept row, else the smaller cell id, else the file
path: a cell file's name is digits, which sort before ``folder``), and the next merge
rebuilds the part.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections import Counter

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from geo_assets import layout
from geo_assets.clients.redact import PROCESS_REDACTOR
from geo_assets.manifest import (
    MANIFEST_SCHEMA,
    SCHEMA_VERSION,
    DropReason,
    table_to_parquet_bytes,
)
from geo_assets.storage import DataRoot, sha256_hex


def use_index(root: DataRoot, source) -> bool:
    """Give ``source`` its photos from the stored folder index when the folder is unchanged
    (same ``folder_version``), else parse the folder (EXIF or sidecar) once and store the
    index: a folder's EXIF is read once per folder version, not once per run. True when the
    stored index was used."""
    from geo_assets.clients.local_folder import LocalPhoto

    version, rel = source.folder_version(), layout.LOCAL_FOLDER_INDEX
    if root.exists(rel):
        with root.parquet_file(rel) as parquet:
            table = parquet.read()
        if (table.schema.metadata or {}).get(b"folder_version") == version.encode():
            source.use_photos([LocalPhoto(**row) for row in table.to_pylist()])
            return True
    fields = [f.name for f in dataclasses.fields(LocalPhoto)]
    rows = [dataclasses.asdict(p) for p in source.photos]
    types = {"lat": pa.float64(), "lon": pa.float64(), "captured_at_ms": pa.int64(),
             "heading": pa.float64()}
    schema = pa.schema([(n, types.get(n, pa.string())) for n in fields],
                       metadata={"folder_version": version})
    table = pa.Table.from_pylist(rows, schema=schema)
    with root.open_atomic(rel) as f:
        pq.write_table(table, f, compression="zstd")
    return False


def crawled_cells(root: DataRoot, source: str) -> list[str]:
    """The cells of ``source`` whose crawl is done (manifest and stats file present)."""
    stats = {p.rsplit("/", 1)[-1].removesuffix(layout.CELL_STATS_SUFFIX)
             for p in root.glob(layout.cell_stats(source, "*"))}
    return sorted(c for c in stats if c.isdigit()
                  and root.exists(layout.cell_manifest(source, c)))


def grid_crawl_cells(root: DataRoot, level: int) -> set[str] | None:
    """The grid's cells at the crawl level (None: no grid stored)."""
    if not root.exists(layout.GRID_CELLS):
        return None
    with root.fs.open(root.path(layout.GRID_CELLS), "rb") as f:
        grid = pl.read_parquet(f, columns=["cell_id", "level"])
    return set(grid.filter(pl.col("level") == level)["cell_id"].to_list())


def covered(source, crawled: list[str]) -> np.ndarray:
    """Per photo: whether a crawled cell (of any level: a crawl plan splits dense cells)
    holds it; vectorised per level."""
    hit = np.zeros(len(source.photos), dtype=bool)
    for level in sorted({len(c) for c in crawled}):
        mine = [c for c in crawled if len(c) == level]
        hit |= pl.Series(source.cells_at(level), dtype=pl.String).is_in(mine).to_numpy()
    return hit


def _photo_frame(source, idx: np.ndarray, cells: np.ndarray) -> pl.DataFrame:
    """The photos at ``idx`` as columns (relpath, lat, lon, ..., cell)."""
    photos = [source.photos[i] for i in idx]
    extra = [source.unlisted_photo(rel) for rel in source.unlisted_files()]
    names = ("relpath", "lat", "lon", "group", "captured_at_ms", "heading", "license",
             "attribution", "drop_reason", "error")
    types = {"lat": pl.Float64, "lon": pl.Float64, "captured_at_ms": pl.Int64,
             "heading": pl.Float64}
    frame = pl.DataFrame({n: [getattr(p, n) for p in photos + extra] for n in names},
                         schema={n: types.get(n, pl.String) for n in names})
    errors = [PROCESS_REDACTOR(e) if e is not None else None for e in frame["error"]]
    frame = frame.with_columns(error=pl.Series(errors, dtype=pl.String))  # record texts
    return frame.with_columns(cell=pl.Series([str(c) for c in cells[idx]] + [""] * len(extra),
                                             dtype=pl.String))


def _reasons(grid_cells: set[str] | None) -> tuple[pl.Expr, pl.Expr]:
    """(drop reason, error) of a photo that no crawled cell holds: no location first, then
    its own record's reason, then outside the grid's crawl cells, else not crawled yet."""
    rel, cell, own = pl.col("relpath"), pl.col("cell"), pl.col("drop_reason")
    unplaced = cell == ""
    outside = cell.is_in(sorted(grid_cells)).not_() if grid_cells is not None else pl.lit(False)
    reason = (pl.when(unplaced).then(own.fill_null(str(DropReason.NO_LOCATION)))
              .when(own.is_not_null()).then(own)
              .when(outside).then(pl.lit(str(DropReason.OUTSIDE_REGION)))
              .otherwise(pl.lit(str(DropReason.OUTSIDE_CRAWL_CELLS))))
    error = (pl.when(pl.col("error").is_not_null()).then(pl.col("error"))
             .when(unplaced).then(pl.format("{}: no usable location", rel))
             .when(own.is_not_null()).then(pl.lit(""))
             .when(outside).then(pl.format(
                 "{}: cell {} is not a crawl cell of the grid (outside the region, or the "
                 "photo is newer than the grid: materialize grid_cells again)", rel, cell))
             .otherwise(pl.format("{}: cell {} is not crawled yet (geoscout cells add {})",
                                  rel, cell, cell)))
    return reason, error


def folder_table(source, crawled: list[str], crawl_level: int,
                 grid_cells: set[str] | None) -> pa.Table:
    """The folder part: manifest rows (sorted by image id) of the folder's photos that no
    crawled cell holds and of its image files that no sidecar row names; vectorised."""
    idx = np.flatnonzero(~covered(source, crawled))
    frame = _photo_frame(source, idx, source.cells_at(crawl_level))
    reason, error = _reasons(grid_cells)
    rel = pl.col("relpath")
    frame = frame.select(
        image_id=pl.lit(f"{source.name}:") + rel, source=pl.lit(str(source.name)),
        source_id=rel, group_id="group", creator=pl.lit(None, pl.String),
        lat_deg="lat", lon_deg="lon", captured_at="captured_at_ms", heading_deg="heading",
        is_pano=pl.lit(None, pl.Boolean), cell_id="cell",
        license=pl.col("license").fill_null(pl.lit(source.default_license, pl.String)),
        attribution=pl.col("attribution").fill_null(
            pl.lit(source.default_attribution, pl.String)),
        kept=pl.lit(False), drop_reason=reason,
        error=error.str.slice(0, 500))
    table = frame.sort("image_id").to_arrow()
    columns = [table[n] if n in table.column_names else pa.nulls(len(table))
               for n in MANIFEST_SCHEMA.names]
    return pa.Table.from_arrays(columns, names=MANIFEST_SCHEMA.names).cast(MANIFEST_SCHEMA)


def part_inputs(root: DataRoot, source, crawled: list[str], crawl_level: int) -> str:
    """Hash of everything the folder part depends on."""
    grid = root.sha256(layout.GRID_CELLS) if root.exists(layout.GRID_CELLS) else ""
    text = json.dumps({"folder": source.folder_version(), "crawled": crawled, "grid": grid,
                       "level": crawl_level, "schema": SCHEMA_VERSION}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def write_folder_part(root: DataRoot, source, crawl_level: int) -> dict:
    """Write (or keep, when its inputs are unchanged) the folder part of ``source``; its
    stats (``"rebuilt"``: whether it was written now)."""
    name = str(source.name)
    manifest_rel, stats_rel = layout.folder_part(name)
    crawled = crawled_cells(root, name)
    inputs = part_inputs(root, source, crawled, crawl_level)
    if root.exists(stats_rel) and root.exists(manifest_rel):
        old = json.loads(root.read_bytes(stats_rel))
        if old.get("inputs") == inputs:
            return {**old, "rebuilt": False}
    use_index(root, source)
    t0 = time.monotonic()
    table = folder_table(source, crawled, crawl_level, grid_crawl_cells(root, crawl_level))
    data = table_to_parquet_bytes(table)
    root.write_bytes(manifest_rel, data)
    reasons = Counter(table["drop_reason"].to_pylist())
    stats = {"cell_id": layout.FOLDER_PART, "source": name, "schema_version": SCHEMA_VERSION,
             "status": "ok", "manifest": manifest_rel, "stats_file": stats_rel,
             "version": sha256_hex(data), "inputs": inputs, "n_rows": table.num_rows,
             "n_kept": 0, "n_dropped": table.num_rows, "drop_reasons": dict(sorted(reasons.items())),
             "photos_in_folder": len(source.photos) + len(source.unlisted_files()),
             "crawled_cells": len(crawled), "crawl_level": crawl_level,
             "seconds": round(time.monotonic() - t0, 3)}
    root.write_bytes(stats_rel, json.dumps(stats, indent=1, sort_keys=True).encode())
    return {**stats, "rebuilt": True}
