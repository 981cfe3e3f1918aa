"""Hostile API entities: every one ends as a typed row or a recorded drop, never an aborted
cell; no request target is taken from API data outside the allow-list; property-based
fuzzing of entity shapes."""

from __future__ import annotations

import math
import os

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from geo_assets.cells import point_to_cell
from geo_assets.clients.mapillary import MapillaryClient, MapillarySource, parse_image
from geo_assets.clients.records import SOURCE_ID_RE
from geo_assets.clients.streetview import parse_metadata
from geo_assets.ingest import build_rows, ingest_cell
from geo_assets.manifest import rows_to_table
from geo_assets.settings import (
    FilterSettings,
    HttpSettings,
    IngestSettings,
    MapillarySettings,
    RetryPolicy,
)
from geo_assets.storage import DataRoot
from tests.hostile.server import Hostile
from tests.ingest.ingest_helpers import jpeg_bytes

LAT, LON = 45.1, 7.3
CELL = point_to_cell(LAT, LON, 6)
THUMB = "thumb_256_url"


def entity(i, lon=LON, lat=LAT, **over) -> dict:
    e = {"id": str(i), "computed_geometry": {"type": "Point",
                                            "coordinates": [lon + i * 1e-4, lat + i * 1e-4]},
         "captured_at": 1_600_000_000_000 + i, "sequence": f"seq{i}", "compass_angle": 90.0,
         "creator": {"username": "someone"}, "is_pano": False, THUMB: "{base}/cdn/" + f"{i}.jpg"}
    e.update(over)
    return e


HOSTILE = {  # id -> (entity, expected drop reason, a word the error must contain)
    "11": (entity(11, computed_geometry={"coordinates": ["7.3x", "45.1"]}), "no_location",
           "longitude"),
    "12": (entity(12, computed_geometry={"coordinates": {"lon": 7.3}}), "no_location",
           "coordinates"),
    "13": (entity(13, computed_geometry="POINT(7.3 45.1)"), "no_location", "geometry"),
    "14": (entity(14, captured_at="yesterday"), "invalid_record", "captured_at"),
    "15": (entity(15, captured_at=1e20), "invalid_record", "captured_at"),
    "16": (entity(16, sequence={"id": "x"}), "invalid_record", "sequence"),
    "17": (entity(17, computed_geometry={"coordinates": [LON, float("nan")]}), "no_location",
           "latitude"),
    "18": (entity(18, computed_geometry={"coordinates": [LON, 95.0]}), "no_location",
           "latitude"),
    "19": (entity(19, computed_geometry={"coordinates": [float("inf"), LAT]}), "no_location",
           "longitude"),
    "20": (entity(20, creator="not an object"), "invalid_record", "creator"),
    "21": (entity(21, **{THUMB: "http://169.254.169.254/latest/meta-data/"}), "invalid_record",
           "refused"),
    "22": (entity(22, **{THUMB: "file:///etc/passwd"}), "invalid_record", "refused"),
}
GOOD = [entity(i) for i in range(1, 7)]
TRAVERSAL = entity(30, id="../../../../etc/passwd")


def source_for(server: Hostile) -> MapillarySource:
    http = HttpSettings(requests_per_s=0, read_timeout_s=5.0,
                        retry=RetryPolicy(max_retries=1, backoff_base_s=0.01, backoff_max_s=0.02))
    settings = MapillarySettings(thumb_resolution=256, use_coverage_tiles=False,
                                 max_search_requests=1, http=http)
    client = MapillaryClient("MLY|canary-1", graph_url=server.url + "/graph",
                             tiles_url=server.url + "/tiles", settings=settings, seed=0)
    return MapillarySource(client)


def crawl(tmp_path) -> tuple[pl.DataFrame, Hostile]:
    with Hostile() as server:
        data = [e for e, _, _ in HOSTILE.values()] + GOOD + [TRAVERSAL, "junk", 42, None]
        body = [{k: (v.format(base=server.url) if isinstance(v, str) and "{base}" in v else v)
                 for k, v in e.items()} if isinstance(e, dict) else e for e in data]
        server.route("/graph/images", "json", body={"data": body})
        server.route("/cdn/", "bytes", body=jpeg_bytes(160, 120))
        root = DataRoot(str(tmp_path / "data"))
        result = ingest_cell(source_for(server), CELL, root,
                             IngestSettings(target_per_cell=100, workers=2))
        table = pl.read_parquet(root.path(result.manifest_relpath))
    return table, server


def test_a_cell_of_hostile_entities_records_every_one_and_keeps_the_good(tmp_path):
    table, server = crawl(tmp_path)
    rows = {r["image_id"]: r for r in table.iter_rows(named=True)}
    for i in range(1, 7):
        assert rows[f"mapillary:{i}"]["sha256"] is not None  # good images stored
    for sid, (_, reason, word) in HOSTILE.items():
        row = rows[f"mapillary:{sid}"]
        assert row["drop_reason"] == reason, (sid, row["error"])
        assert word in row["error"], (sid, row["error"])
    invalid = [r for k, r in rows.items() if k.startswith("mapillary:invalid-")]
    assert len(invalid) == 4  # the traversal id and the three non-objects
    assert all(r["drop_reason"] == "invalid_record" for r in invalid)
    assert any("../" in r["error"] for r in invalid)
    # nothing was requested from a path built out of the hostile id or a refused thumbnail
    assert not [r for r in server.requests if "passwd" in r["path"] or ".." in r["path"]]
    assert {r["path"].split("/")[1] for r in server.requests} <= {"graph", "cdn"}
    # and nothing was written outside the data root
    assert sorted(os.listdir(tmp_path)) == ["data"]


def test_the_crawl_of_hostile_entities_is_done_and_passes_the_manifest_checks(tmp_path):
    from geo_assets.manifest_checks import coordinates_outside_cells, duplicate_image_ids

    table, _ = crawl(tmp_path)
    assert duplicate_image_ids(table).passed and coordinates_outside_cells(table).passed
    assert not set(table["drop_reason"].drop_nulls()) & {"fetch_failed", "corrupt"}


# --- property-based fuzzing -----------------------------------------------------------------

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-10**30, max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=30))
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)),
    max_leaves=12)
point = st.fixed_dictionaries({"type": st.just("Point"), "coordinates": st.one_of(
    st.lists(st.one_of(st.floats(-200, 200), json_scalars), min_size=0, max_size=3),
    json_values)})
FIELDS = ["id", "computed_geometry", "geometry", "captured_at", "compass_angle",
          "computed_compass_angle", "sequence", "creator", "is_pano", THUMB]
entities = st.one_of(
    json_values,
    st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=len(FIELDS)),
    st.builds(lambda e, g, i: {**e, "computed_geometry": g, "id": i},
              st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=6), point,
              st.one_of(st.integers(0, 10**18), st.text(max_size=20), json_values)))


def assert_recorded(c) -> None:
    """A candidate is either fully valid or a recorded rejection with an error."""
    if c.drop_reason is None:
        assert math.isfinite(c.lat_deg) and abs(c.lat_deg) <= 90
        assert math.isfinite(c.lon_deg) and abs(c.lon_deg) <= 180
        assert SOURCE_ID_RE.match(c.source_id)
        assert c.captured_at_ms is None or 0 <= c.captured_at_ms <= 4_102_444_800_000
        assert c.heading_deg is None or 0 <= c.heading_deg < 360
    else:
        assert c.drop_reason in ("no_location", "invalid_record") and c.error
    # whatever it is, it becomes a valid manifest row
    rows = build_rows([c], {}, CELL, FilterSettings())
    assert rows_to_table(rows).num_rows == 1


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(entities)
def test_any_entity_shape_is_a_typed_row_or_a_recorded_drop(e):
    assert_recorded(parse_image(e, THUMB))


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(["pano_id", "location", "date", "copyright", "status"]),
                       json_values),
       st.one_of(json_values, st.fixed_dictionaries({"lat": json_scalars, "lng": json_scalars})))
def test_any_streetview_metadata_parses_or_names_the_field(meta, location):
    from geo_assets.clients.records import RecordError

    meta = {**meta, "location": location}
    try:
        pano = parse_metadata(meta)
    except RecordError as exc:
        assert str(exc)
        return
    assert np.isfinite([pano["location"]["lat"], pano["location"]["lng"]]).all()
    assert SOURCE_ID_RE.match(pano["pano_id"])


def _tile_that_breaks_the_decoder(tile: bytes) -> bytes:
    """A real coverage tile with a few bytes changed so that the MVT decoder fails with
    something other than ValueError (an AssertionError on a broken tag list)."""
    import random

    from geo_assets.clients.vector_tiles import decode_tile

    rng = random.Random(0)
    for _ in range(2000):
        b = bytearray(tile)
        for _ in range(rng.randint(1, 20)):
            b[rng.randrange(len(b))] = rng.randrange(256)
        try:
            decode_tile(bytes(b), 14, 1, 1)
        except (ValueError, IndexError, UnicodeDecodeError):
            continue
        except Exception:  # noqa: BLE001 - the kind of failure wanted here
            return bytes(b)
    pytest.skip("no decoder-breaking mutation found")


def test_garbage_coverage_tiles_fall_back_to_sampled_boxes(tmp_path, shared_data):
    tile = min(shared_data("api_fixtures", "mapillary", "coverage_tiles_z14").glob("*.mvt"))
    garbage = _tile_that_breaks_the_decoder(tile.read_bytes())
    with Hostile() as server:
        server.route("/graph/images", "json", body={"data": [
            {k: (v.format(base=server.url) if isinstance(v, str) and "{base}" in v else v)
             for k, v in e.items()} for e in GOOD]})
        server.route("/cdn/", "bytes", body=jpeg_bytes(160, 120))
        server.route("/tiles/", "bytes", body=garbage)
        source = source_for(server)
        source.settings = source.client.settings = MapillarySettings(
            thumb_resolution=256, use_coverage_tiles=True, max_search_requests=1,
            http=source.client.settings.http)
        result = ingest_cell(source, CELL, DataRoot(str(tmp_path / "data")),
                             IngestSettings(target_per_cell=100, workers=2))
    assert any(r["path"].startswith("/tiles/") for r in server.requests)
    assert result.stats["listing"]["coverage"] == "sampled"
    assert result.n_rows == len(GOOD)  # all listed and fetched; same bytes: one kept
    assert result.n_kept == 1 and result.drop_reasons == {"duplicate_content": len(GOOD) - 1}
