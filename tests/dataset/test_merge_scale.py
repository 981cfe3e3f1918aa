"""The merge at scale: the cross-cell dedup looks only at rows near cell edges (or in cells
with several sources) and gives the same result as looking at every row."""

from __future__ import annotations

import numpy as np
import polars as pl

from geo_assets.cells import cells_bounds, points_to_cells
from geo_assets.merge import cross_cell_dedup, near_partition_edge


def _frame(seed: int, n: int = 6000, level: int = 9) -> pl.DataFrame:
    """Images clustered around cell corners and edges (and some inside), two sources."""
    rng = np.random.default_rng(seed)
    centre_lat, centre_lon = rng.uniform(-70, 70), rng.uniform(-179, 179)
    anchors = cells_bounds(points_to_cells(
        centre_lat + rng.uniform(-1, 1, 40), centre_lon + rng.uniform(-1, 1, 40), level))
    a = rng.integers(0, len(anchors), n)
    lat = anchors[a, 1] + rng.normal(0, 0.0002, n)  # around the south-west corners
    lon = anchors[a, 0] + rng.normal(0, 0.0002, n)
    inside = rng.random(n) < 0.3
    lat[inside] += rng.uniform(0, 0.3, inside.sum())
    source = np.where(rng.random(n) < 0.8, "mapillary", "local")
    return pl.DataFrame({
        "image_id": [f"{s}:{i}" for i, s in enumerate(source)], "source": source,
        "lat_deg": lat, "lon_deg": lon,
        "cell_id": points_to_cells(lat, lon, level).astype(str),
        "captured_at": rng.integers(0, 100, n), "kept": rng.random(n) < 0.9,
        "drop_reason": pl.Series([None] * n, dtype=pl.String),
        "error": pl.Series([None] * n, dtype=pl.String)})


def test_edge_only_dedup_equals_the_full_dedup():
    for seed in range(3):
        frame = _frame(seed)
        fast, n_fast = cross_cell_dedup(frame, 20.0, edges_only=True)
        full, n_full = cross_cell_dedup(frame, 20.0, edges_only=False)
        assert n_fast == n_full > 0
        assert fast.equals(full)


def test_most_rows_are_far_from_the_edges_of_one_source_cells():
    frame = _frame(0).filter(pl.col("source") == "mapillary")
    frame = frame.with_columns(lat_deg=pl.col("lat_deg") + 0.1,  # away from the corners
                               lon_deg=pl.col("lon_deg") + 0.2)
    frame = frame.with_columns(cell_id=pl.Series(points_to_cells(
        frame["lat_deg"].to_numpy(), frame["lon_deg"].to_numpy(), 9).astype(str)))
    near = frame.filter(pl.col("kept")).select(near_partition_edge(10.0)).to_series()
    assert near.mean() < 0.2


def test_streamed_merge_equals_the_eager_merge(tmp_path, monkeypatch):
    """Cell files with repeated image ids and cross-cell neighbours: the streamed merge keeps
    the rows an eager concat + unique + full dedup keeps, with the same decisions."""
    from geo_assets import layout
    from geo_assets.manifest import MANIFEST_SCHEMA, table_to_parquet_bytes
    from geo_assets.merge import merge_manifests
    from geo_assets.storage import DataRoot

    frame = _frame(1, n=3000).with_columns(
        source_id=pl.col("image_id"), captured_at=pl.col("captured_at").cast(
            pl.Datetime("ms", "UTC")), sha256=pl.col("image_id"))
    repeats = frame.head(200).with_columns(  # the same images listed again in another cell
        cell_id=pl.col("cell_id").str.slice(0, 8) + "0", kept=~pl.col("kept"))
    root = DataRoot(str(tmp_path))
    full = pl.concat([frame, repeats], how="vertical_relaxed")
    schema_cols = [c for c in MANIFEST_SCHEMA.names]
    for (cell, source), part in full.group_by(["cell_id", "source"]):
        table = part.with_columns(*[pl.lit(None).alias(c) for c in schema_cols
                                    if c not in part.columns]).select(schema_cols)
        root.write_bytes(layout.cell_manifest(source, cell),
                         table_to_parquet_bytes(table.to_arrow().cast(MANIFEST_SCHEMA)))
        root.write_bytes(layout.cell_stats(source, cell), b"{}")
    result = merge_manifests(root, min_distance_m=20.0)
    merged = pl.read_parquet(root.local_path(layout.IMAGE_MANIFEST))
    eager = full.sort(["image_id", "kept", "cell_id"], descending=[False, True, False]) \
        .unique("image_id", keep="first")
    eager, n_cross = cross_cell_dedup(eager, 20.0, edges_only=False)
    cols = ["image_id", "cell_id", "kept", "drop_reason", "error"]
    assert merged.select(cols).sort("image_id").equals(eager.select(cols).sort("image_id"))
    assert result.n_duplicate_ids == 200 and result.n_cross_cell_dropped == n_cross > 0
    assert merge_manifests(root, min_distance_m=20.0).sha256 == result.sha256
    monkeypatch.setattr("geo_assets.merge.FILES_PER_READ", 3)  # many reads, same rows
    assert merge_manifests(root, min_distance_m=20.0).sha256 == result.sha256


def _write_cells(root, frame: pl.DataFrame) -> None:
    """One cell manifest (and its stats file: the cell is done) per cell and source."""
    from geo_assets import layout
    from geo_assets.manifest import MANIFEST_SCHEMA, table_to_parquet_bytes

    frame = frame.with_columns(source_id=pl.col("image_id"), sha256=pl.col("image_id"),
                               captured_at=pl.col("captured_at").cast(pl.Datetime("ms", "UTC")))
    cols = MANIFEST_SCHEMA.names
    for (cell, source), part in frame.group_by(["cell_id", "source"]):
        table = part.with_columns(*[pl.lit(None).alias(c) for c in cols
                                    if c not in part.columns]).select(cols)
        root.write_bytes(layout.cell_manifest(source, cell),
                         table_to_parquet_bytes(table.sort("image_id").to_arrow()
                                                .cast(MANIFEST_SCHEMA)))
        root.write_bytes(layout.cell_stats(source, cell), b"{}")


def _merged_files(root) -> dict[str, bytes]:
    from geo_assets import layout

    return {p: root.read_bytes(p) for p in (layout.IMAGE_MANIFEST, layout.CELL_VERSIONS)}


def test_incremental_merge_equals_a_full_merge(tmp_path, monkeypatch):
    """New cells next to old ones and re-crawled cells: the incremental merge re-merges those
    (and the cells whose decisions they change), copies the rest from the last merge, and
    writes the bytes a merge from scratch writes. An unchanged re-run re-merges nothing."""
    from geo_assets import layout
    from geo_assets.merge import merge_manifests
    from geo_assets.storage import DataRoot

    monkeypatch.setattr("geo_assets.merge.FILES_PER_READ", 4)  # reuse and re-merge mixed
    frame = _frame(2, n=4000)
    repeats = frame.head(150).with_columns(  # the same images listed again in another cell
        cell_id=pl.col("cell_id").str.slice(0, 8) + "0", kept=~pl.col("kept"))
    cells = sorted(frame["cell_id"].unique())
    old_cells, new_cells = cells[: len(cells) * 2 // 3], cells[len(cells) * 2 // 3:]
    root = DataRoot(str(tmp_path))
    _write_cells(root, pl.concat([frame.filter(pl.col("cell_id").is_in(old_cells)), repeats],
                                 how="vertical_relaxed"))
    first = merge_manifests(root, min_distance_m=20.0)
    assert first.n_cells_merged == first.n_cells and first.n_cells_reused == 0

    again = merge_manifests(root, min_distance_m=20.0)
    assert (again.n_cells_merged, again.n_cells_reused) == (0, first.n_cells)
    assert again.sha256 == first.sha256
    assert (again.n_rows, again.n_kept, again.n_cross_cell_dropped, again.n_duplicate_ids) \
        == (first.n_rows, first.n_kept, first.n_cross_cell_dropped, first.n_duplicate_ids)

    recrawled = old_cells[::5]  # re-crawled: other kept flags, some images gone
    redo = frame.filter(pl.col("cell_id").is_in(recrawled)).filter(
        pl.int_range(pl.len()) % 7 != 0).with_columns(
        kept=pl.when(pl.int_range(pl.len()) % 3 == 0).then(~pl.col("kept")).otherwise("kept"))
    for cell in recrawled:
        for file in tmp_path.glob(f"manifests/cells/*/{cell}.parquet"):
            file.unlink()
    _write_cells(root, pl.concat([redo, frame.filter(pl.col("cell_id").is_in(new_cells))]))
    grown = merge_manifests(root, min_distance_m=20.0)
    incremental = _merged_files(root)
    assert 0 < grown.n_cells_reused and 0 < grown.n_cells_merged < grown.n_cells
    assert grown.n_cells_merged >= len(recrawled) + len(new_cells)
    assert grown.n_cross_cell_dropped > 0 and grown.n_duplicate_ids > 0

    full = merge_manifests(root, min_distance_m=20.0, incremental=False)
    assert full.n_cells_reused == 0
    assert _merged_files(root) == incremental and full.sha256 == grown.sha256
    assert (full.n_rows, full.n_kept) == (grown.n_rows, grown.n_kept)
    assert merge_manifests(root, min_distance_m=20.0).n_cells_merged == 0
    assert merge_manifests(root, min_distance_m=30.0).n_cells_reused == 0  # other distance
    root.write_bytes(layout.MERGE_STATE, b"{not json")  # unreadable state: merge from scratch
    assert merge_manifests(root, min_distance_m=20.0).n_cells_reused == 0
