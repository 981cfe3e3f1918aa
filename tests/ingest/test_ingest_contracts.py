"""Contract tests: the clients parse the real recorded API responses in
../shared/data/api_fixtures (skipped when that folder is absent)."""

from __future__ import annotations

import json

import pytest
import requests

from geo_assets.clients.mapillary import LICENSE, classify_graph, parse_image
from geo_assets.clients.streetview import StreetViewSource, classify_metadata, parse_date, sign_url
from geo_assets.clients.vector_tiles import decode_tile, tiles_covering
from tests.conftest import shared_data_path


def fake_response(status: int, body) -> requests.Response:
    r = requests.Response()
    r.status_code = status
    r._content = json.dumps(body).encode() if not isinstance(body, bytes) else body
    return r


def graph_entities() -> list[dict]:
    folder = shared_data_path("api_fixtures", "mapillary", "graph")
    return [json.loads(p.read_text()) for p in sorted(folder.glob("[0-9]*.json"))]


def test_real_image_entities_parse():
    entities = graph_entities()
    assert len(entities) == 8
    link = ("https://scontent.xx.fbcdn.net/m1/v/t6/An8" + "x" * 300
            + "?stp=s1024x768&ccb=10-5&oh=00_AYC&oe=6761&_nc_sid=201bca")
    for e in entities:  # the recordings replace the signed link with a filler
        assert parse_image(e, "thumb_1024_url").drop_reason == "invalid_record"
        c = parse_image(dict(e, thumb_1024_url=link), "thumb_1024_url")
        assert c.image_id == f"mapillary:{e['id']}" and c.group_id == e["sequence"]
        assert (c.lon_deg, c.lat_deg) == tuple(e["computed_geometry"]["coordinates"])
        assert c.captured_at_ms == e["captured_at"] and c.license == LICENSE
        assert c.fetch_ref == link  # kept whole: neither redacted nor cut
        assert 0 <= c.heading_deg < 360
        assert "fetch_ref" not in repr(c)  # the signed link never shows in a repr


def test_geometry_fallback_when_computed_geometry_is_missing():
    e = dict(graph_entities()[0])
    e.pop("computed_geometry")
    c = parse_image(e, "thumb_1024_url")
    assert (c.lon_deg, c.lat_deg) == tuple(e["geometry"]["coordinates"])
    e.pop("geometry")
    c = parse_image(e, "thumb_1024_url")  # recorded with its reason, not vanished
    assert c.drop_reason == "no_location" and "geometry" in c.error


def test_real_error_bodies_classify():
    folder = shared_data_path("api_fixtures", "mapillary", "graph")
    limit = json.loads((folder / "application_request_limit_reached.json").read_text())
    invalid = json.loads((folder / "internal_server_error.json").read_text())
    assert classify_graph(fake_response(403, limit))[0] == "quota"      # code 4 -> retry
    kind, message = classify_graph(fake_response(500, invalid))        # code 190 -> no retry
    assert kind == "credential" and "MAPILLARY_TOKEN" in message
    timeout = {"error": {"message": "Query Timeout", "code": 1, "error_subcode": 3404014}}
    assert classify_graph(fake_response(400, timeout))[0] == "transient"
    assert classify_graph(fake_response(400, {"error": {"code": 100}}))[0] == "fatal"


def test_real_coverage_tiles_decode_to_their_area():
    folder = shared_data_path("api_fixtures", "mapillary", "coverage_tiles_z14")
    for path in sorted(folder.glob("*.mvt")):
        x, y = (int(v) for v in path.stem.split("_"))
        layers = decode_tile(path.read_bytes(), 14, x, y)
        assert {"image", "sequence"} <= set(layers)
        pts = [f.lonlat for f in layers["image"]]
        assert len(pts) > 100
        lon = [p[0, 0] for p in pts]
        lat = [p[0, 1] for p in pts]
        # tiles 3251-3252 / 6257-6258 at z14 lie near Grand Junction, Colorado
        assert -108.7 < min(lon) and max(lon) < -108.4 and 38.9 < min(lat) and max(lat) < 39.2
        assert all(f.geom_type == 2 for f in layers["sequence"])
        assert (x, y) in tiles_covering((min(lon), min(lat), max(lon), max(lat)), 14)


def recorded() -> list[dict]:
    path = shared_data_path("api_fixtures", "streetview", "recorded_responses.json")
    return json.loads(path.read_text())


def test_real_streetview_metadata_parses_into_candidates():
    metas = [r["body"] for r in recorded() if "/metadata" in r["request_uri"]]
    assert len(metas) == 28
    for meta in metas:
        assert classify_metadata(fake_response(200, meta)) == ("ok", "")
        cands = StreetViewSource._candidates(meta, (0.0, 90.0, 180.0, 270.0))
        assert [c.heading_deg for c in cands] == [0, 90, 180, 270]
        assert {c.group_id for c in cands} == {meta["pano_id"]}
        assert cands[0].image_id == f"streetview:{meta['pano_id']}_0"
        assert cands[0].captured_at_ms == parse_date(meta["date"])
        assert cands[0].attribution == "© Google"


@pytest.mark.parametrize("status,kind", [
    ("OVER_QUERY_LIMIT", "quota"), ("UNKNOWN_ERROR", "transient"),
    ("REQUEST_DENIED", "credential"), ("INVALID_REQUEST", "fatal"), ("ZERO_RESULTS", "ok"),
])
def test_streetview_statuses(status, kind):
    assert classify_metadata(fake_response(200, {"status": status}))[0] == kind


def test_recorded_static_images_validate():
    from geo_assets.images import inspect_image

    for r in recorded():
        if "body_file" in r:
            data = shared_data_path("api_fixtures", "streetview", r["body_file"]).read_bytes()
            info = inspect_image(data)
            assert info.ok and (info.width, info.height) == (640, 640)


def test_url_signature_matches_googles_published_example():
    # https://developers.google.com/maps/documentation/maps-static/digital-signature
    path = "/maps/api/geocode/json?address=New+York&client=clientID"
    assert sign_url(path, "vNIXE0xscrmjlyV-12Nj_BvUPaw=") == "chaRF2hTJKOScPr-RQCEhZbSzIE="
