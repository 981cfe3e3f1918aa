"""No local photo lost silently: the folder part records every photo of the folder that no
crawled cell holds (no location, outside the region's grid, cell not crawled yet), and the
merged manifest then holds every photo of the folder exactly once. Real photos (Croatia and
worldwide Street View) through a sidecar; photo-driven grid cells keep a coast that the
1:110m land misses."""

from __future__ import annotations

import dagster as dg
import numpy as np
import polars as pl

from geo_assets import layout
from geo_assets.cells import points_to_cells
from geo_assets.clients.local_folder import LocalFolderSource, image_files
from geo_assets.grid import build_grid, crawl_cells, write_grid
from geo_assets.ingest import ingest_cell
from geo_assets.local_index import write_folder_part
from geo_assets.merge import merge_manifests
from geo_assets.naturalearth import embedded_land
from geo_assets.regions import bbox
from geo_assets.settings import IngestSettings
from tests.conftest import shared_data_path

LEVEL = 6
BOAT = (35.0, 18.0)  # the Ionian Sea: in no cell of a grid over Croatia


def _croatia_sidecar(tmp_path, n=120):
    """The first ``n`` Croatia photos, a photo taken on a boat far outside the region and a
    row without a location; the folder's other files have no sidecar row."""
    folder = shared_data_path("real", "croatia_streetview")
    labels = pl.read_csv(folder / "labels.csv").select("filename", "lat", "lon")
    rows = labels.head(n).with_columns(pl.col("lat", "lon").cast(pl.String))
    extra = pl.DataFrame({"filename": [labels["filename"][n], labels["filename"][n + 1]],
                          "lat": [str(BOAT[0]), ""], "lon": [str(BOAT[1]), "16.0"]})
    sidecar = tmp_path / "photos.csv"
    pl.concat([rows, extra]).rename({"filename": "file"}).write_csv(sidecar)
    return folder, sidecar, labels.head(n)


def _merged(root) -> pl.DataFrame:
    merge_manifests(root)
    return pl.read_parquet(root.local_path(layout.IMAGE_MANIFEST))


def test_every_photo_of_the_folder_is_in_the_manifest_once(tmp_path, data_root):
    folder, sidecar, labels = _croatia_sidecar(tmp_path)
    source = LocalFolderSource(folder, sidecar)
    write_grid(build_grid(embedded_land(), LEVEL, 10.0, region=bbox(13, 42, 20, 47)).cells,
               data_root)
    cells = points_to_cells(labels["lat"].to_numpy(), labels["lon"].to_numpy(), LEVEL)
    first = str(pl.Series(cells).mode()[0])
    ingest_cell(source, first, data_root, IngestSettings(workers=2))

    part = write_folder_part(data_root, source, LEVEL)
    assert part["rebuilt"] and part["crawled_cells"] == 1
    merged = _merged(data_root)
    files = {p.relative_to(folder).as_posix() for p in image_files(folder)}
    assert merged.height == len(files) == merged["image_id"].n_unique()  # each file once
    assert set(merged["source_id"]) == files
    assert merged.filter(~pl.col("kept"))["drop_reason"].null_count() == 0
    by_id = {r["source_id"]: r for r in merged.iter_rows(named=True)}
    pending = labels.filter(pl.Series(cells != first))
    assert pending.height > 0
    assert {by_id[f]["drop_reason"] for f in pending["filename"]} == {"outside_crawl_cells"}
    assert by_id[pending["filename"][0]]["cell_id"] == str(points_to_cells(
        pending["lat"].to_numpy()[:1], pending["lon"].to_numpy()[:1], LEVEL)[0])
    boat, unplaced = labels.height, labels.height + 1
    boat_file = pl.read_csv(sidecar)["file"][boat]
    assert by_id[boat_file]["drop_reason"] == "outside_region"
    assert by_id[pl.read_csv(sidecar)["file"][unplaced]]["drop_reason"] == "no_location"
    unlisted = files - set(pl.read_csv(sidecar)["file"])
    assert {by_id[f]["drop_reason"] for f in unlisted} == {"no_location"}
    assert "no row in sidecar" in by_id[min(unlisted)]["error"]
    crawled = merged.filter(pl.col("cell_id") == first)
    assert crawled.filter(pl.col("kept")).height > 0.8 * int((cells == first).sum())

    # unchanged inputs: the part is not rebuilt; a newly crawled cell leaves the part
    assert not write_folder_part(data_root, source, LEVEL)["rebuilt"]
    second = min(set(cells) - {first})
    ingest_cell(source, second, data_root, IngestSettings(workers=2))
    again = write_folder_part(data_root, source, LEVEL)
    assert again["rebuilt"] and again["n_rows"] == part["n_rows"] - int((cells == second).sum())
    merged = _merged(data_root)
    assert merged.height == len(files) == merged["image_id"].n_unique()
    assert "outside_crawl_cells" not in set(
        merged.filter(pl.col("cell_id") == second)["drop_reason"].drop_nulls())


def test_folder_part_is_deterministic(tmp_path):
    from geo_assets.storage import DataRoot

    folder, sidecar, _ = _croatia_sidecar(tmp_path, n=40)
    versions = []
    for name in ("a", "b"):
        root = DataRoot(str(tmp_path / name))
        versions.append(write_folder_part(root, LocalFolderSource(folder, sidecar), LEVEL))
    assert versions[0]["version"] == versions[1]["version"]
    # no grid: every located photo (the boat too) is pending
    assert versions[0]["drop_reasons"]["outside_crawl_cells"] == 40 + 1


def test_photo_cells_keep_a_coast_the_110m_land_misses(tmp_path):
    """A real photo on the Gulf of Bothnia coast (65.74 N, 24.57 E) lies in a level-9 cell
    that 1:110m land without a coastal buffer drops; the photo-driven grid crawls it."""
    from pipeline.assets import grid as grid_assets
    from pipeline.resources import GeoscoutSettings, LocalFolderResource

    folder = shared_data_path("real", "worldwide_streetview")
    labels = pl.read_csv(folder / "labels.csv")
    coast = labels.filter((pl.col("lat") - 65.7365).abs() < 1e-3)
    sidecar = tmp_path / "coast.csv"
    coast.select(file="filename", lat="lat", lon="lon").write_csv(sidecar)
    cell = str(points_to_cells(coast["lat"].to_numpy()[:1], coast["lon"].to_numpy()[:1], 9)[0])
    found = {}
    for photo_cells in (False, True):
        settings = GeoscoutSettings(
            data_root=str(tmp_path / f"data{photo_cells}"), region="bbox:20,60,30,70",
            coastal_buffer_km=0.0, grid_max_level=9, crawl_level=9, sources=["local"],
            local_photo_cells=photo_cells)
        with dg.instance_for_test() as instance:
            result = dg.materialize(
                [grid_assets.land_polygons, grid_assets.grid_cells], instance=instance,
                resources={"settings": settings, "local_folder": LocalFolderResource(
                    folder=str(folder), sidecar=str(sidecar))})
        assert result.success
        meta = result.asset_materializations_for_node("grid_cells")[0].metadata
        from geo_assets.grid import load_grid

        found[photo_cells] = (cell in crawl_cells(load_grid(settings.root()), 9),
                              meta["photo_cells_added"].value)
    assert found[False] == (False, 0)
    assert found[True][0] and found[True][1] >= 1
    from pipeline.sensors import wanted_cells

    assert cell in wanted_cells(settings.root(), 9)[0]  # the crawl sensor registers it
    source = LocalFolderSource(folder, sidecar)
    res = ingest_cell(source, cell, settings.root(), IngestSettings(workers=2))
    assert res.n_rows == coast.height and res.n_kept >= 1
    assert np.isin(np.array(["outside_region", "outside_crawl_cells"]),
                   list(res.drop_reasons)).sum() == 0


def test_folder_index_is_reused_while_the_folder_is_unchanged(tmp_path, data_root):
    """EXIF is read once per folder version: a second source object gets the same photos
    from the stored index; a new file changes the version and the index is rebuilt."""
    import shutil

    from geo_assets.local_index import use_index
    from tests.ingest.ingest_helpers import jpeg_bytes
    from tests.ingest.test_ingest_local import _gps_exif

    folder = tmp_path / "photos"
    (folder / "trip").mkdir(parents=True)
    (folder / "trip" / "a.jpg").write_bytes(jpeg_bytes(exif=_gps_exif(43.5081, 16.4402)))
    (folder / "trip" / "nogps.jpg").write_bytes(jpeg_bytes())
    first = LocalFolderSource(folder)
    assert not use_index(data_root, first)
    again = LocalFolderSource(folder)
    assert use_index(data_root, again)
    assert list(map(repr, again.photos)) == list(map(repr, first.photos))  # NaN != NaN
    assert [p.drop_reason for p in again.photos] == [None, "no_location"]
    shutil.copy(folder / "trip" / "a.jpg", folder / "trip" / "b.jpg")
    changed = LocalFolderSource(folder)
    assert not use_index(data_root, changed)
    assert len(changed.photos) == 3


def test_a_cell_crawled_after_the_part_wins_in_the_merge(tmp_path, data_root):
    """A stale part (its cell crawled between the part and the merge) never hides the cell's
    rows: the merge keeps the cell file's row of a repeated id."""
    folder, sidecar, labels = _croatia_sidecar(tmp_path, n=40)
    source = LocalFolderSource(folder, sidecar)
    write_folder_part(data_root, source, LEVEL)  # nothing crawled: every photo pending
    cells = points_to_cells(labels["lat"].to_numpy(), labels["lon"].to_numpy(), LEVEL)
    cell = str(pl.Series(cells).mode()[0])
    res = ingest_cell(source, cell, data_root, IngestSettings(workers=2))
    merged = merge_manifests(data_root)
    table = pl.read_parquet(data_root.local_path(layout.IMAGE_MANIFEST))
    assert merged.n_duplicate_ids == res.n_rows
    assert table.height == table["image_id"].n_unique()
    mine = table.filter(pl.col("cell_id") == cell)
    assert mine.height == res.n_rows and mine["kept"].sum() == res.n_kept > 0
    assert "outside_crawl_cells" not in set(mine["drop_reason"].drop_nulls())


def test_a_folder_set_one_level_too_deep_gives_a_manifest_of_drops(tmp_path):
    """The sidecar names ``images/<file>`` but the folder setting already ends in ``images``:
    no row finds its file and no file its row. The manifest still materializes, every photo
    dropped with its reason, and the coverage map says how many have no location."""
    from pipeline.assets import grid as grid_assets
    from pipeline.assets import ingest as ingest_assets
    from pipeline.resources import GeoscoutSettings, LocalFolderResource

    folder = shared_data_path("real", "croatia_streetview")
    settings = GeoscoutSettings(data_root=str(tmp_path / "data"), region="countries:HRV",
                                crawl_level=6, sources=["local"])
    local = LocalFolderResource(folder=str(folder / "images"),
                                sidecar=str(folder / "labels.csv"))
    resources = {"settings": settings, "local_folder": local}
    with dg.instance_for_test() as instance:
        assert dg.materialize([grid_assets.land_polygons, grid_assets.grid_cells],
                              instance=instance, resources=resources).success
        result = dg.materialize([ingest_assets.image_manifest], instance=instance,
                                resources=resources)
    assert result.success
    manifest = _merged(settings.root())
    assert manifest.height > 0 and not manifest["kept"].any()
    assert "no_location" in set(manifest["drop_reason"].to_list())  # the files: no row
    assert manifest["lat_deg"].is_null().any() or manifest["lat_deg"].is_nan().any()
    png = settings.root().read_bytes(layout.COVERAGE_MAP)
    assert png.startswith(b"\x89PNG")
