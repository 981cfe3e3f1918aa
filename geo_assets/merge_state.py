"""What the last merge decided per cell file (``manifests/merge_state.json``): the incremental
merge's memory.

A cell file's rows in the merged manifest depend only on its bytes (``version``: its SHA-256)
and on the decisions about its rows made across files (which of its image ids another file
wins, which of its kept rows the cross-cell dedup displaces, with the message): ``decisions``
is a digest of those. When both are unchanged since the last merge, and the merged manifest is
still the file that merge wrote, the cell's rows are copied from it (``start``, ``n_rows``)
instead of being read, sorted and decided again; the result is byte for byte the same. When
every cell file is the last merge's, the decisions are too: nothing is read but the files'
hashes.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from geo_assets import layout
from geo_assets.storage import DataRoot

FORMAT = 1


@dataclass(frozen=True)
class CellState:
    version: str      # sha256 of the cell file
    decisions: str    # digest of the cross-file decisions about its rows
    start: int        # its first row in the merged manifest
    n_rows: int       # its rows there

    def row(self) -> list:
        return [self.version, self.decisions, self.start, self.n_rows]


@dataclass(frozen=True)
class MergeState:
    min_distance_m: float
    manifest_sha256: str
    n_kept: int
    cells: dict[str, CellState]          # by cell file path, in merge order
    counts: dict[tuple[str, str], tuple[int, int]]  # (cell, source) -> rows, kept rows
    n_cross_cell_dropped: int
    n_duplicate_ids: int

    def to_json(self) -> bytes:
        return json.dumps({
            "format": FORMAT, "min_distance_m": self.min_distance_m,
            "manifest_sha256": self.manifest_sha256, "n_kept": self.n_kept,
            "n_cross_cell_dropped": self.n_cross_cell_dropped,
            "n_duplicate_ids": self.n_duplicate_ids,
            "cells": {p: c.row() for p, c in self.cells.items()},
            "counts": [[c, s, n, k] for (c, s), (n, k) in sorted(self.counts.items())]},
            separators=(",", ":")).encode()


def read_state(root: DataRoot, min_distance_m: float) -> MergeState | None:
    """The last merge's state when it can be reused: same format and dedup distance, and the
    merged manifest still the one it wrote (else None: merge everything)."""
    if not (root.exists(layout.MERGE_STATE) and root.exists(layout.IMAGE_MANIFEST)):
        return None
    try:
        raw = json.loads(root.read_bytes(layout.MERGE_STATE))
        state = MergeState(
            float(raw["min_distance_m"]), str(raw["manifest_sha256"]), int(raw["n_kept"]),
            {p: CellState(str(v), str(d), int(s), int(n)) for p, (v, d, s, n)
             in raw["cells"].items()},
            {(str(c), str(s)): (int(n), int(k)) for c, s, n, k in raw["counts"]},
            int(raw["n_cross_cell_dropped"]), int(raw["n_duplicate_ids"]))
        if raw["format"] != FORMAT:
            return None
    except (ValueError, KeyError, TypeError):  # unreadable: a full merge rewrites it
        return None
    if state.min_distance_m != min_distance_m \
            or root.sha256(layout.IMAGE_MANIFEST) != state.manifest_sha256:
        return None
    return state


def decision_digests(paths: list[str], repeated, updates) -> dict[str, str]:
    """Per cell file, a digest of the cross-file decisions about its rows.

    ``repeated``: image_id, _path, _win (the file that keeps the id) for every file holding an
    image id that several files hold; ``updates``: image_id, _err, _path for every kept row
    the cross-cell dedup displaces. A file with no such decision gets ``""``."""
    import polars as pl

    lines = pl.concat([
        repeated.select("_path", line=pl.concat_str([pl.lit("r"), "image_id", "_win"],
                                                    separator="\x1f")),
        updates.select("_path", line=pl.concat_str([pl.lit("u"), "image_id", "_err"],
                                                   separator="\x1f"))])
    joined = lines.group_by("_path").agg(pl.col("line").sort().str.join("\x1e"))
    out = dict.fromkeys(paths, "")
    for path, text in joined.iter_rows():
        out[path] = hashlib.sha256(text.encode()).hexdigest()
    return out
