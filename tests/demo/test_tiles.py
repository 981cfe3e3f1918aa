"""Coverage vector tiles: the MVT encoder and where the demo world's coverage shows up."""

from __future__ import annotations

import mapbox_vector_tile
import requests

from geo_assets.demo.mvt import encode_tile
from geo_assets.demo.tiles import TILE_PREFIX, CoverageTiles, mercator

FEATURES = {
    "image": [
        {"id": 7, "type": "Point", "parts": [[(10, 4000)]],
         "properties": {"id": 123456789012345, "is_pano": False, "sequence_id": "abc",
                        "compass_angle": 271, "captured_at": 1563721072184}},
    ],
    "sequence": [
        {"id": 0, "type": "LineString", "parts": [[(0, 0), (100, 50), (4096, 4200)]],
         "properties": {"id": "abc", "is_pano": True, "score": 0.25}},
    ],
}


def decode_tile(data: bytes) -> dict:
    """Tile pixel coordinates, y down: layer -> {"extent", "version", "features"}."""
    return mapbox_vector_tile.decode(data, default_options={"y_coord_down": True})


def test_encode_decode_round_trip():
    decoded = decode_tile(encode_tile(FEATURES))
    assert set(decoded) == {"image", "sequence"}
    for name, feats in FEATURES.items():
        assert decoded[name]["extent"] == 4096 and decoded[name]["version"] == 2
        assert [(f["id"], f["properties"]) for f in decoded[name]["features"]] == [
            (f["id"], f["properties"]) for f in feats]
    point = decoded["image"]["features"][0]
    assert point["geometry"] == {"type": "Point", "coordinates": [10, 4000]}
    line = decoded["sequence"]["features"][0]
    assert line["geometry"] == {"type": "LineString",
                                "coordinates": [[0, 0], [100, 50], [4096, 4200]]}


def test_single_pixel_sequences_are_kept():
    line = {"id": 1, "type": "LineString", "parts": [[(5, 6), (5, 6)]], "properties": {}}
    (f,) = decode_tile(encode_tile({"sequence": [line]}))["sequence"]["features"]
    assert f["geometry"] == {"type": "LineString", "coordinates": [[5, 6], [5, 6]]}


def test_empty_layers_are_left_out():
    assert encode_tile({"image": []}) == b""
    assert set(decode_tile(encode_tile({"image": [], **FEATURES}))) == set(FEATURES)


def _tile_of(lat, lon, z):
    x, y = mercator(lat, lon)
    return z, int(x * 2**z), int(y * 2**z)


def test_every_image_is_in_its_z14_tile_at_its_position(demo_world):
    tiles = CoverageTiles(demo_world)
    for im in demo_world.images[::25]:
        z, tx, ty = _tile_of(im.lat, im.lon, 14)
        layer = decode_tile(tiles.tile(z, tx, ty))["image"]
        hit = [f for f in layer["features"] if f["properties"]["id"] == int(im.image_id)]
        assert len(hit) == 1
        assert hit[0]["geometry"]["type"] == "Point"
        px, py = hit[0]["geometry"]["coordinates"]
        x, y = mercator(im.lat, im.lon)
        assert abs((tx + px / 4096) - x * 2**14) < 2 / 4096
        assert abs((ty + py / 4096) - y * 2**14) < 2 / 4096
        assert hit[0]["properties"]["sequence_id"] == im.sequence_id


def test_sequences_at_mid_zoom_and_overview_at_low_zoom(demo_world):
    tiles = CoverageTiles(demo_world)
    seq_id, images = next(iter(demo_world.sequences.items()))
    first = images[0]
    mid = decode_tile(tiles.tile(*_tile_of(first.lat, first.lon, 9)))
    assert set(mid) == {"sequence"}
    assert seq_id in {f["properties"]["id"] for f in mid["sequence"]["features"]}
    low = decode_tile(tiles.tile(*_tile_of(first.lat, first.lon, 3)))
    assert set(low) == {"overview"}
    assert seq_id in {f["properties"]["sequence_id"] for f in low["overview"]["features"]}
    world = decode_tile(tiles.tile(0, 0, 0))["overview"]["features"]
    assert len(world) == len(demo_world.sequences)


def _z14_tiles_under(feature, z, tx, ty) -> set[tuple[int, int, int]]:
    """The z14 tiles that a feature of tile (z, tx, ty) passes through."""
    scale = 2 ** (14 - z)
    return {(14, int((tx + px / 4096) * scale), int((ty + py / 4096) * scale))
            for px, py in feature["geometry"]["coordinates"]}


def test_tiles_guide_a_crawler_to_all_coverage(demo_world):
    """Overview points -> z6 sequence lines -> z14 image points finds every image."""
    tiles = CoverageTiles(demo_world)
    z6 = {(6, px * 64 // 4096, py * 64 // 4096)
          for f in decode_tile(tiles.tile(0, 0, 0))["overview"]["features"]
          for px, py in [f["geometry"]["coordinates"]]}
    z14: set[tuple[int, int, int]] = set()
    for t in z6:
        for f in decode_tile(tiles.tile(*t))["sequence"]["features"]:
            z14 |= _z14_tiles_under(f, *t)
    found = set()
    for t in z14:
        layer = decode_tile(tiles.tile(*t)).get("image", {"features": []})
        found |= {f["properties"]["id"] for f in layer["features"]}
    assert found == {int(im.image_id) for im in demo_world.images}
    assert len(z14) < 3 * len(demo_world.images)


def test_empty_and_bad_tiles(demo_server):
    base = demo_server.url + TILE_PREFIX
    empty = requests.get(base + "14/0/0", timeout=10)  # the Arctic Ocean off Alaska
    assert empty.status_code == 200 and empty.content == b""
    assert empty.headers["Content-Type"] == "application/x-protobuf"
    for bad in ("15/0/0", "14/16384/0", "3/a/b", "3/1"):
        assert requests.get(base + bad, timeout=10).status_code == 404


def test_tile_over_http_matches_the_builder(demo_server, demo_world):
    im = demo_world.images[3]
    z, x, y = _tile_of(im.lat, im.lon, 14)
    r = requests.get(f"{demo_server.url}{TILE_PREFIX}{z}/{x}/{y}", timeout=10)
    assert len(r.content) > 0 and r.content == CoverageTiles(demo_world).tile(z, x, y)


def test_tiles_take_the_token_like_the_real_service(demo_server, demo_world):
    im = demo_world.images[3]
    z, x, y = _tile_of(im.lat, im.lon, 14)
    url = f"{demo_server.url}{TILE_PREFIX}{z}/{x}/{y}"
    assert requests.get(url, params={"access_token": "demo-token"}, timeout=10).content
    wrong = requests.get(url, params={"access_token": "nope"}, timeout=10)
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == 190
