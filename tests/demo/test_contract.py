"""Contract tests: the demo server's responses have the shape of the recorded real ones.

The recorded responses live in ../shared/data/api_fixtures (never copied into the repo);
these tests skip when that folder is absent. Shapes compare field names, JSON types and
nesting; values are the demo world's own.
"""

from __future__ import annotations

import io
import json
from urllib.parse import parse_qsl, urlsplit

import mapbox_vector_tile
import requests
from PIL import Image

from geo_assets.clients import vector_tiles
from geo_assets.demo import mapillary_api as mly
from geo_assets.demo.tiles import mercator
from tests.conftest import shared_data_path

TOKEN = {"Authorization": "OAuth demo-token"}


def shape(value):
    """The type structure of a JSON value: dict keys, list element shapes, scalar kinds."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        kinds = {json.dumps(shape(v), sort_keys=True) for v in value}
        return [json.loads(k) for k in sorted(kinds)]
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    return "null" if value is None else "str"


def _graph_fixtures():
    folder = shared_data_path("api_fixtures", "mapillary", "graph")
    return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}


def test_image_entities_have_the_recorded_shape(demo_server, demo_world):
    im = next(i for i in demo_world.images
              if i.has_computed_geometry and not i.is_pano and i.artefact is None)
    entities = {k: v for k, v in _graph_fixtures().items() if k.isdigit()}
    assert len(entities) == 8
    for name, recorded in entities.items():
        recorded.pop("comment", None)  # a note by whoever recorded it, not an API field
        r = requests.get(f"{demo_server.url}/mapillary/{im.image_id}", headers=TOKEN,
                         params={"fields": ",".join(recorded)}, timeout=10)
        ours = r.json()
        if not recorded["detections"]["data"]:
            ours["detections"]["data"] = []
        assert shape(ours) == shape(recorded), name


def test_search_items_have_the_entity_shape(demo_server, demo_world):
    recorded = _graph_fixtures()["135511895288847"]
    im = next(i for i in demo_world.images if i.has_computed_geometry)
    fields = ["id", "geometry", "computed_geometry", "captured_at", "sequence"]
    r = requests.get(f"{demo_server.url}/mapillary/images", headers=TOKEN, timeout=10, params={
        "bbox": f"{im.lon},{im.lat},{im.lon},{im.lat}", "fields": ",".join(fields)})
    item = next(d for d in r.json()["data"] if d["id"] == im.image_id)
    assert shape(item) == shape({k: recorded[k] for k in fields})


def test_sequence_image_ids_have_the_recorded_shape(demo_server, demo_world):
    recorded = _graph_fixtures()["sequence_image_ids_7nfcwfvjdtphz7yj6zat6a"]
    seq = next(iter(demo_world.sequences))
    r = requests.get(f"{demo_server.url}/mapillary/image_ids", headers=TOKEN, timeout=10,
                     params={"sequence_id": seq})
    assert shape(r.json()) == shape(recorded)


def test_error_bodies_have_the_recorded_shape(demo_server, demo_world):
    fixtures = _graph_fixtures()
    r = requests.get(f"{demo_server.url}/mapillary/{demo_world.images[0].image_id}",
                     params={"fields": "id", "access_token": "wrong"}, timeout=10)
    invalid = fixtures["internal_server_error"]
    assert shape(r.json()) == shape(invalid)
    assert r.json()["error"]["code"] == invalid["error"]["code"] == 190
    assert r.json()["error"]["message"] == invalid["error"]["message"]
    limit = fixtures["application_request_limit_reached"]
    ours = json.loads(mly.rate_limited().body)
    assert mly.rate_limited().status == 403
    assert shape(ours) == shape(limit)
    assert {k: v for k, v in ours["error"].items() if k != "fbtrace_id"} == {
        k: v for k, v in limit["error"].items() if k != "fbtrace_id"}


def _recorded_streetview():
    path = shared_data_path("api_fixtures", "streetview", "recorded_responses.json")
    return path.parent, json.loads(path.read_text())


def test_streetview_metadata_has_the_recorded_shape(demo_server, demo_world):
    _, recorded = _recorded_streetview()
    ok = [r["body"] for r in recorded if "body" in r and r["body"]["status"] == "OK"]
    assert ok
    pano = demo_world.panoramas[0]
    r = requests.get(f"{demo_server.url}/google/maps/api/streetview/metadata", timeout=10,
                     params={"pano": pano.pano_id, "key": "demo-key"})
    ours = r.json()
    assert all(shape(ours) == shape(body) for body in ok)
    assert all(ours["copyright"] == body["copyright"] for body in ok)
    assert len(ours["date"]) == len(ok[0]["date"]) and len(ours["pano_id"]) == len(
        ok[0]["pano_id"])


def test_streetview_images_match_the_recorded_ones(demo_server, demo_world):
    folder, recorded = _recorded_streetview()
    images = [r for r in recorded if "body_file" in r]
    assert images
    pano = demo_world.panoramas[0]
    for rec in images:
        params = dict(parse_qsl(urlsplit(rec["request_uri"]).query))
        params.update(pano=pano.pano_id, key="demo-key")
        r = requests.get(f"{demo_server.url}/google/maps/api/streetview", params=params,
                         timeout=10)
        assert r.status_code == rec["status_code"]
        assert r.headers["Content-Type"] == rec["content_type"][0]
        real = Image.open(folder / rec["body_file"])
        ours = Image.open(io.BytesIO(r.content))
        assert (ours.format, ours.size, ours.mode) == (real.format, real.size, real.mode)
        assert len(r.content) > 0.2 * (folder / rec["body_file"]).stat().st_size


def decode_tile(data: bytes) -> dict:
    """layer -> {"extent", "version", "features": [{id, type (1 point, 2 line), properties,
    geometry}]}, in tile pixel coordinates (y down)."""
    return mapbox_vector_tile.decode(
        data, default_options={"y_coord_down": True, "geojson": False})


def _fixture_tile_paths(n=2):
    """The ``n`` smallest recorded z14 tiles (decoding all four takes seconds)."""
    folder = shared_data_path("api_fixtures", "mapillary", "coverage_tiles_z14")
    return sorted(folder.glob("*.mvt"), key=lambda p: p.stat().st_size)[:n]


def test_client_decoder_reads_the_recorded_tiles_like_mapbox_vector_tile():
    path = _fixture_tile_paths(1)[0]
    x, y = (int(v) for v in path.stem.split("_"))
    theirs = decode_tile(path.read_bytes())
    ours = vector_tiles.decode_tile(path.read_bytes(), 14, x, y)
    assert set(ours) == set(theirs)
    for name, features in ours.items():
        assert len(features) == len(theirs[name]["features"])
        f, g = features[0], theirs[name]["features"][0]
        assert f.properties == g["properties"] and f.id == g["id"]
        assert f.geom_type == g["type"]


def test_coverage_tiles_have_the_recorded_layers_and_properties(demo_server, demo_world):
    recorded = [decode_tile(p.read_bytes()) for p in _fixture_tile_paths()]
    im = demo_world.images[0]
    x, y = mercator(im.lat, im.lon)
    r = requests.get(f"{demo_server.url}/mapillary-tiles/maps/vtp/mly1_public/2/14/"
                     f"{int(x * 2**14)}/{int(y * 2**14)}", timeout=10)
    ours = decode_tile(r.content)
    assert set(ours) == {"sequence", "image"} == set(recorded[0])
    for name in ours:
        real_features = [f for tile in recorded for f in tile[name]["features"]]
        always = set.intersection(*(set(f["properties"]) for f in real_features))
        ever = set.union(*(set(f["properties"]) for f in real_features))
        assert ours[name]["extent"] == recorded[0][name]["extent"] == 4096
        assert ours[name]["version"] == recorded[0][name]["version"] == 2
        assert {f["type"] for f in ours[name]["features"]} == {
            f["type"] for f in real_features}
        for f in ours[name]["features"]:
            assert always <= set(f["properties"]) <= ever
