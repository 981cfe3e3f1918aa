"""The local-folder source: real Street View photos through a CSV sidecar, EXIF GPS photos,
cell assignment, and the filters on real pictures."""

from __future__ import annotations

import csv

import numpy as np
import polars as pl
import pytest
from PIL import Image

from geo_assets.cells import points_to_cells
from geo_assets.clients.base import ListRequest
from geo_assets.clients.local_folder import LocalFolderSource, exif_location
from geo_assets.errors import InputError
from geo_assets.ingest import ingest_cell
from geo_assets.merge import merge_manifests
from geo_assets.settings import IngestSettings
from tests.conftest import shared_data_path
from tests.ingest.ingest_helpers import jpeg_bytes


def croatia():
    folder = shared_data_path("real", "croatia_streetview")
    return folder, LocalFolderSource(folder, folder / "labels.csv")


def test_sidecar_photos_are_assigned_to_their_cells():
    folder, source = croatia()
    labels = pl.read_csv(folder / "labels.csv")
    cells = points_to_cells(labels["lat"].to_numpy(), labels["lon"].to_numpy(), 6)
    cell = str(pl.Series(cells).mode()[0])
    found = source.list_candidates(ListRequest(cell, 10_000))
    assert len(found) == int((cells == cell).sum()) > 0
    # one group per place: the four headings share it
    groups = {c.group_id for c in found}
    assert len(groups) * 4 == len(found)
    assert found[0].license.startswith("Google Street View")


def test_real_photos_through_the_pipeline(data_root):
    folder, source = croatia()
    labels = pl.read_csv(folder / "labels.csv")
    cells = points_to_cells(labels["lat"].to_numpy(), labels["lon"].to_numpy(), 7)
    cell = str(pl.Series(cells).mode()[0])
    result = ingest_cell(source, cell, data_root, IngestSettings(workers=2))
    assert result.n_rows == int((cells == cell).sum())
    table = pl.read_parquet(data_root.path(result.manifest_relpath))
    assert table["image_id"].is_unique().all()
    assert table.filter(pl.col("kept"))["sha256"].null_count() == 0
    assert result.n_kept > 0.8 * result.n_rows
    # a place's four headings are kept or dropped together by the spatial filter
    dup = table.filter(pl.col("drop_reason") == "duplicate_location")
    assert dup.height % 4 == 0
    again = ingest_cell(source, cell, data_root, IngestSettings(workers=2))
    assert again.skipped and again.version == result.version
    merged = merge_manifests(data_root)
    assert merged.n_rows == result.n_rows


def test_worldwide_photos_spread_over_cells(data_root):
    folder = shared_data_path("real", "worldwide_streetview")
    source = LocalFolderSource(folder, folder / "labels.csv")
    cells = sorted(set(source.cells_at(2)))
    assert len(cells) > 4
    total = sum(len(source.list_candidates(ListRequest(c, 10_000))) for c in cells)
    assert total == len(source.photos) == 420


def _gps_exif(lat: float, lon: float) -> bytes:
    exif = Image.Exif()
    gps = exif.get_ifd(0x8825)

    def dms(v: float):
        v = abs(v)
        d = int(v)
        m = int((v - d) * 60)
        return (d, m, round(((v - d) * 60 - m) * 60, 4))

    gps.update({1: "N" if lat >= 0 else "S", 2: dms(lat), 3: "E" if lon >= 0 else "W",
                4: dms(lon)})
    exif[0x8769] = {0x9003: "2021:06:01 12:00:00"}
    return exif.tobytes()


def test_exif_gps_photos(tmp_path, data_root):
    folder = tmp_path / "photos" / "alice"
    folder.mkdir(parents=True)
    (folder / "a.jpg").write_bytes(jpeg_bytes(exif=_gps_exif(-33.8796, 151.1655)))
    (folder / "b.jpg").write_bytes(jpeg_bytes(colour=(30, 200, 90),
                                              exif=_gps_exif(-33.8900, 151.1000)))
    (folder / "nogps.jpg").write_bytes(jpeg_bytes())
    lat, lon, taken = exif_location(folder / "a.jpg")
    assert (lat, lon) == pytest.approx((-33.8796, 151.1655), abs=1e-5)
    assert taken == 1622548800000
    source = LocalFolderSource(tmp_path / "photos")
    cell = str(points_to_cells(np.array([lat]), np.array([lon]), 8)[0])
    cands = source.list_candidates(ListRequest(cell, 100))
    assert [c.source_id for c in cands] == ["alice/a.jpg", "alice/b.jpg"]
    assert {c.group_id for c in cands} == {"alice"}
    result = ingest_cell(source, cell, data_root, IngestSettings())
    assert result.n_kept == 2


def test_bad_sidecar_says_what_is_missing(tmp_path):
    sidecar = tmp_path / "s.csv"
    with open(sidecar, "w", newline="") as f:
        csv.writer(f).writerows([["name", "y", "x"], ["a.jpg", 1, 2]])
    with pytest.raises(InputError, match="file .*lat, lon"):
        _ = LocalFolderSource(tmp_path, sidecar).photos
    with pytest.raises(InputError, match="does not exist"):
        LocalFolderSource(tmp_path / "nope").preflight()
