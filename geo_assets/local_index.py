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

import hashlib
import json
import time
from collections import Counter

import numpy as np
import polars as pl

from geo_assets import layout
from geo_assets.manifest import SCHEMA_VERSION, DropReason, rows_to_table, table_to_parquet_bytes
from geo_assets.storage import DataRoot, sha256_hex

NO_FILE_FIELDS = {"sha256": None, "file_bytes": None, "width": None, "height": None,
                  "brightness": None, "phash": None}


def use_index(root: DataRoot, source) -> bool:
    """Give ``source`` its photos from the stored folder index when the folder is unchanged
    (same ``folder_version``), else parse the folder (EXIF or sidecar) once and store the
    index: a folder's EXIF is read once per folder version, not once per run. True when the
    stored index was used."""
    import dataclasses

    import pyarrow as pa
    import pyarrow.parquet as pq

    from geo_assets.clients.local_folder import LocalPhoto

    version, rel = source.folder_version(), layout.LOCAL_FOLDER_INDEX
    if root.exists(rel):
        with root.fs.open(root.path(rel), "rb") as f:
            table = pq.read_table(f)
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


def _reason(photo, cell: str, grid_cells: set[str] | None) -> tuple[str, str]:
    """(drop reason, error) of a photo that no crawled cell holds."""
    if not cell:
        return (photo.drop_reason or str(DropReason.NO_LOCATION),
                photo.error or f"{photo.relpath}: no usable location")
    if photo.drop_reason:  # a bad record at a place: its own reason comes first
        return photo.drop_reason, photo.error or ""
    if grid_cells is not None and cell not in grid_cells:
        error = (f"{photo.relpath}: cell {cell} is not a crawl cell of the grid (outside "
                 "the region, or the photo is newer than the grid: materialize grid_cells "
                 "again)")
        return str(DropReason.OUTSIDE_REGION), error
    return (str(DropReason.OUTSIDE_CRAWL_CELLS),
            f"{photo.relpath}: cell {cell} is not crawled yet (geoscout cells add {cell})")


def folder_rows(source, crawled: list[str], crawl_level: int,
                grid_cells: set[str] | None) -> list[dict]:
    """Manifest rows of the folder's photos that no crawled cell holds, and of its image
    files that no sidecar row names."""
    from geo_assets.ingest import base_row

    cells = source.cells_at(crawl_level)
    rows = []
    for i in np.flatnonzero(~covered(source, crawled)):
        photo = source.photos[i]
        reason, error = _reason(photo, str(cells[i]), grid_cells)
        row = base_row(source.candidate(photo, check_file=False), str(cells[i]))
        rows.append({**row, **NO_FILE_FIELDS, "drop_reason": reason, "error": error[:500]})
    for rel in source.unlisted_files():
        photo = source.unlisted_photo(rel)
        row = base_row(source.candidate(photo, check_file=False), "")
        rows.append({**row, **NO_FILE_FIELDS, "drop_reason": photo.drop_reason,
                     "error": photo.error})
    return rows


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
    if root.exists(stats_rel) and root.exists(manifest_rel):
        old = json.loads(root.read_bytes(stats_rel))
        if old.get("inputs") == part_inputs(root, source, crawled, crawl_level):
            return {**old, "rebuilt": False}
    use_index(root, source)
    inputs = part_inputs(root, source, crawled, crawl_level)
    t0 = time.monotonic()
    rows = folder_rows(source, crawled, crawl_level, grid_crawl_cells(root, crawl_level))
    data = table_to_parquet_bytes(rows_to_table(rows))
    root.write_bytes(manifest_rel, data)
    reasons = Counter(r["drop_reason"] for r in rows)
    stats = {"cell_id": layout.FOLDER_PART, "source": name, "schema_version": SCHEMA_VERSION,
             "status": "ok", "manifest": manifest_rel, "stats_file": stats_rel,
             "version": sha256_hex(data), "inputs": inputs, "n_rows": len(rows), "n_kept": 0,
             "n_dropped": len(rows), "drop_reasons": dict(sorted(reasons.items())),
             "photos_in_folder": len(source.photos) + len(source.unlisted_files()),
             "crawled_cells": len(crawled), "crawl_level": crawl_level,
             "seconds": round(time.monotonic() - t0, 3)}
    root.write_bytes(stats_rel, json.dumps(stats, indent=1, sort_keys=True).encode())
    return {**stats, "rebuilt": True}
