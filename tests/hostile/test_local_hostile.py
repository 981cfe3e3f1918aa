"""Hostile photo folders and sidecars: bad rows are recorded naming file and row, paths stay
inside the folder after resolving links, one bad location never fails the source."""

from __future__ import annotations

import csv
import hashlib
import os

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, TiffImagePlugin

from geo_assets.cells import point_to_cell
from geo_assets.clients.base import ListRequest
from geo_assets.clients.local_folder import LocalFolderSource, exif_location, photos_from_sidecar
from geo_assets.errors import InputError
from geo_assets.ingest import ingest_cell
from geo_assets.settings import IngestSettings
from geo_assets.storage import DataRoot
from tests.ingest.ingest_helpers import jpeg_bytes

LAT, LON = 48.85, 2.35
CELL = point_to_cell(LAT, LON, 6)


def write_csv(path, rows, delimiter=","):
    with open(path, "w", newline="") as f:
        csv.writer(f, delimiter=delimiter).writerows(rows)


@pytest.fixture
def hostile_folder(tmp_path):
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    outside = tmp_path / "secret.jpg"
    outside.write_bytes(jpeg_bytes(colour=(200, 10, 10)))
    for i in range(3):
        (folder / f"ok{i}.jpg").write_bytes(jpeg_bytes(colour=(40 * i + 20, 120, 90)))
    (folder / "sub" / "link.jpg").symlink_to(outside)
    (folder / "inner_link.jpg").symlink_to(folder / "ok0.jpg")
    rows = [["file", "lat", "lon", "heading"],
            ["ok0.jpg", LAT, LON, 10], ["ok1.jpg", LAT + 0.001, LON, ""],
            ["ok2.jpg", LAT + 0.002, LON, 30],
            ["ok1.jpg", LAT + 5, LON + 5, ""],           # listed twice, other place
            ["fifty.jpg", "fifty", LON, ""],            # not a number
            ["nan.jpg", "nan", LON, ""], ["inf.jpg", LAT, "inf", ""],
            ["far.jpg", 91, LON, ""],
            ["head.jpg", LAT, LON, "north"],            # bad optional field
            ["../secret.jpg", LAT + 0.003, LON, ""],    # escapes by ..
            [str(outside), LAT + 0.004, LON, ""],       # absolute
            ["sub/link.jpg", LAT + 0.005, LON, ""],     # symlink out of the folder
            ["inner_link.jpg", LAT + 0.006, LON, ""],   # symlink inside: fine
            ["missing.jpg", LAT + 0.007, LON, ""]]
    write_csv(tmp_path / "labels.csv", rows)
    return folder, tmp_path / "labels.csv"


def test_hostile_sidecar_rows_are_recorded_and_the_rest_crawled(hostile_folder, tmp_path):
    folder, sidecar = hostile_folder
    source = LocalFolderSource(folder, sidecar)
    root = DataRoot(str(tmp_path / "data"))
    result = ingest_cell(source, CELL, root, IngestSettings())
    table = pl.read_parquet(root.path(result.manifest_relpath))
    reasons = dict(zip(table["source_id"], table["drop_reason"]))
    errors = dict(zip(table["source_id"], table["error"]))
    stored = table.filter(pl.col("sha256").is_not_null())["source_id"].sort().to_list()
    assert stored == ["inner_link.jpg", "ok0.jpg", "ok1.jpg", "ok2.jpg"]
    assert {reasons["inner_link.jpg"], reasons["ok0.jpg"]} == {None, "duplicate_content"}
    again = next(p for p in source.photos if p.relpath == "ok1.jpg#row5")  # in another cell
    assert again.drop_reason == "invalid_record" and "listed again" in again.error
    assert reasons["head.jpg"] == "invalid_record"
    assert "row 10" in errors["head.jpg"] and "heading" in errors["head.jpg"]
    for name in ("../secret.jpg", str(tmp_path / "secret.jpg"), "sub/link.jpg"):
        assert reasons[name] == "outside_folder", name
    assert reasons["missing.jpg"] == "file_missing"
    # the file outside the folder was never read: its bytes are nowhere in the data root
    secret_sha = hashlib.sha256((tmp_path / "secret.jpg").read_bytes()).hexdigest()
    assert secret_sha not in set(table["sha256"].drop_nulls())
    assert not [p for p in (tmp_path / "data").rglob(f"{secret_sha}*")]
    # rows without a usable location belong to no cell: counted with file and row named
    listing = result.stats["listing"]
    assert listing["records_without_location"] == 4
    assert any("row 6" in e and "fifty" in e for e in listing["examples_without_location"])


def test_a_sidecar_with_the_wrong_separator_is_a_clear_error(tmp_path):
    write_csv(tmp_path / "s.csv", [["file", "lat", "lon"], ["a.jpg", LAT, LON]], ";")
    with pytest.raises(InputError, match=r"s\.csv needs columns file"):
        _ = LocalFolderSource(tmp_path, tmp_path / "s.csv").photos
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(InputError, match=r"bad\.parquet is not a readable table"):
        _ = LocalFolderSource(tmp_path, tmp_path / "bad.parquet").photos


def test_a_million_missing_files_end_as_recorded_drops_not_a_retry(tmp_path):
    n = 20_000  # the same path as a million rows, at a test's size
    lat = LAT + np.linspace(0, 0.1, n)
    pl.DataFrame({"file": [f"gone/{i}.jpg" for i in range(n)], "lat": lat,
                  "lon": np.full(n, LON)}).write_csv(tmp_path / "s.csv")
    (tmp_path / "photos").mkdir()
    source = LocalFolderSource(tmp_path / "photos", tmp_path / "s.csv")
    root = DataRoot(str(tmp_path / "data"))
    result = ingest_cell(source, CELL, root, IngestSettings())
    assert result.n_rows == n and result.drop_reasons == {"file_missing": n}
    assert result.stats["retryable"] == 0


def _exif_with_gps(lat_dms) -> bytes:
    exif = Image.Exif()
    gps = exif.get_ifd(0x8825)
    gps.update({1: "N", 2: lat_dms, 3: "E", 4: (2, 21, 0)})
    return exif.tobytes()


def test_exif_gps_with_a_zero_denominator_skips_that_photo_only(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    zero = TiffImagePlugin.IFDRational(50, 0)
    (folder / "bad.jpg").write_bytes(jpeg_bytes(exif=_exif_with_gps((zero, 0, 0))))
    (folder / "good.jpg").write_bytes(jpeg_bytes(exif=_exif_with_gps((48, 51, 0))))
    assert exif_location(folder / "bad.jpg") is None
    source = LocalFolderSource(folder)
    cell = point_to_cell(48.85, 2.35, 6)
    cands = source.list_candidates(ListRequest(cell, 10))
    assert [c.source_id for c in cands] == ["good.jpg"]


cells = st.one_of(st.none(), st.text(max_size=12), st.floats(allow_nan=True),
                  st.integers(-10**20, 10**20).map(str), st.sampled_from(["../x.jpg", "/etc/x"]))


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(cells, cells, cells, cells), min_size=1, max_size=12))
def test_any_sidecar_row_is_a_photo_or_a_rejection_naming_its_row(tmp_path, rows):
    path = tmp_path / "fuzz.csv"
    write_csv(path, [["file", "lat", "lon", "heading"],
                     *[["" if v is None else v for v in r] for r in rows]])
    try:
        photos = photos_from_sidecar(tmp_path, path)
    except InputError as exc:  # an unreadable table as a whole: named
        assert "fuzz.csv" in str(exc)
        return
    assert len(photos) == len(rows)
    for p in photos:
        if p.drop_reason is None:
            assert np.isfinite([p.lat, p.lon]).all() and abs(p.lat) <= 90 and abs(p.lon) <= 180
        else:
            assert "fuzz.csv row" in p.error
    assert not os.path.exists(tmp_path / "data")
