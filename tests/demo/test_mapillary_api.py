"""The demo Mapillary Graph API over real HTTP: search, entities, thumbnails, errors."""

from __future__ import annotations

import io
import time

import pytest
import requests
from PIL import Image

from geo_assets.demo.server import DemoServer

TOKEN = {"Authorization": "OAuth demo-token"}


def _box(im, half=0.004):
    return f"{im.lon - half},{im.lat - half},{im.lon + half},{im.lat + half}"


def _search(base, **params):
    return requests.get(f"{base}/mapillary/images", params=params, headers=TOKEN, timeout=10)


def _near(world, im, half=0.004):
    return {o.image_id for o in world.images
            if abs(o.lat - im.lat) <= half and abs(o.lon - im.lon) <= half}


def test_search_returns_exactly_the_images_in_the_box(demo_server, demo_world):
    im = demo_world.images[10]
    r = _search(demo_server.url, bbox=_box(im), fields="id,geometry,captured_at")
    assert r.status_code == 200
    data = r.json()["data"]
    assert {d["id"] for d in data} == _near(demo_world, im)
    assert all(set(d) == {"id", "geometry", "captured_at"} for d in data)
    got = {d["id"]: d for d in data}[im.image_id]
    assert got["geometry"] == {"type": "Point", "coordinates": [im.lon, im.lat]}
    assert got["captured_at"] == im.captured_at


def test_search_limit_and_default_fields(demo_server, demo_world):
    im = demo_world.images[10]
    assert len(_search(demo_server.url, bbox=_box(im), limit=2).json()["data"]) == 2
    data = _search(demo_server.url, bbox=_box(im)).json()["data"]
    assert data and all(set(d) == {"id"} for d in data)  # no fields: ids only
    big = _search(demo_server.url, bbox=_box(im), limit=5000).json()["data"]
    assert len(big) == len(_near(demo_world, im))  # limit is capped at 2000, not refused


def test_empty_box_gives_empty_data(demo_server):
    r = _search(demo_server.url, bbox="-30.005,-40.005,-30.0,-40.0", fields="id")
    assert r.status_code == 200 and r.json() == {"data": []}


def test_computed_geometry_is_sometimes_missing(demo_server, demo_world):
    missing = next(im for im in demo_world.images if not im.has_computed_geometry)
    r = requests.get(f"{demo_server.url}/mapillary/{missing.image_id}", headers=TOKEN,
                     params={"fields": "id,geometry,computed_geometry"}, timeout=10)
    assert set(r.json()) == {"id", "geometry"}


@pytest.mark.parametrize("bbox", ["1,2,3", "a,b,c,d", "10,10,9,11", "10,95,10.001,95.001",
                                  "nan,1,2,3", ""])
def test_bad_bbox_is_a_code_100_error(demo_server, bbox):
    r = _search(demo_server.url, bbox=bbox, fields="id")
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["code"] == 100 and err["type"] == "MLYApiException" and "fbtrace_id" in err


def test_too_large_box_is_refused_like_the_real_api(demo_server, demo_world):
    im = demo_world.images[0]
    r = _search(demo_server.url, bbox=_box(im, half=0.006), fields="id")
    assert r.status_code == 400 and r.json()["error"]["code"] == 100
    assert "bbox" in r.json()["error"]["message"]


def test_a_box_of_exactly_the_limit_passes_despite_rounding(demo_server):
    for lon in (16.76, 0.07, -122.43):
        r = _search(demo_server.url, bbox=f"{lon},46.49,{lon + 0.01},46.5", fields="id")
        assert r.status_code == 200


def test_max_bbox_is_configurable(demo_world):
    im = demo_world.images[0]
    with DemoServer(demo_world, max_bbox_deg=0.05) as server:
        assert _search(server.url, bbox=_box(im, half=0.02), fields="id").status_code == 200


def test_search_by_sequence_or_ids_with_filters(demo_server, demo_world):
    seq_id, images = next(iter(demo_world.sequences.items()))
    data = _search(demo_server.url, sequence_id=seq_id, fields="id,sequence").json()["data"]
    assert [d["id"] for d in data] == [im.image_id for im in images]
    ids = [demo_world.images[0].image_id, demo_world.images[7].image_id]
    data = _search(demo_server.url, image_ids=",".join(ids)).json()["data"]
    assert {d["id"] for d in data} == set(ids)
    pano = next(im for im in demo_world.images if im.is_pano)
    data = _search(demo_server.url, bbox=_box(pano), is_pano="true", fields="is_pano")
    assert data.json()["data"] and all(d["is_pano"] for d in data.json()["data"])


def test_search_needs_a_box_and_a_valid_limit(demo_server, demo_world):
    assert _search(demo_server.url, fields="id").status_code == 400
    r = _search(demo_server.url, bbox=_box(demo_world.images[0]), limit="ten")
    assert r.status_code == 400 and r.json()["error"]["code"] == 100


def test_unknown_field_is_refused(demo_server, demo_world):
    r = _search(demo_server.url, bbox=_box(demo_world.images[0]), fields="id,colour")
    assert r.status_code == 400
    assert "colour" in r.json()["error"]["message"]


def test_token_in_header_or_query_and_invalid_token(demo_server, demo_world):
    im = demo_world.images[0]
    url = f"{demo_server.url}/mapillary/{im.image_id}"
    ok = requests.get(url, params={"fields": "id", "access_token": "demo-token"}, timeout=10)
    assert ok.status_code == 200 and ok.json() == {"id": im.image_id}
    for kwargs in ({"params": {"fields": "id", "access_token": "nope"}},
                   {"params": {"fields": "id"}, "headers": {"Authorization": "OAuth nope"}},
                   {"params": {"fields": "id"}}):
        r = requests.get(url, timeout=10, **kwargs)
        assert r.status_code == 401
        assert r.json()["error"]["code"] == 190
        assert r.json()["error"]["message"] == "Invalid OAuth 2.0 Access Token"


def test_entity_fields_and_unknown_id(demo_server, demo_world):
    im = next(i for i in demo_world.images if i.is_pano)
    r = requests.get(f"{demo_server.url}/mapillary/{im.image_id}", headers=TOKEN, timeout=10,
                     params={"fields": "id,sequence,creator,is_pano,compass_angle,"
                                       "quality_score,camera_type,width,height"})
    body = r.json()
    assert body["sequence"] == im.sequence_id and body["is_pano"] is True
    assert body["creator"] == {"username": im.creator_username, "id": im.creator_id}
    assert body["camera_type"] == "spherical" and body["width"] == 2 * body["height"]
    for bad in ("123456789012345", "not-an-id"):
        r = requests.get(f"{demo_server.url}/mapillary/{bad}", headers=TOKEN, timeout=10,
                         params={"fields": "id"})
        assert r.status_code == 400
        assert r.json()["error"]["code"] == 100 and "does not exist" in r.json()["error"][
            "message"]


def test_sequence_image_ids(demo_server, demo_world):
    seq_id, images = next(iter(demo_world.sequences.items()))
    r = requests.get(f"{demo_server.url}/mapillary/image_ids", headers=TOKEN, timeout=10,
                     params={"sequence_id": seq_id})
    assert r.json() == {"data": [{"id": im.image_id} for im in images]}


def test_thumbnails_are_signed_jpegs_of_each_size(demo_server, demo_world):
    im = next(i for i in demo_world.images if i.artefact is None and not i.is_pano)
    sizes = ("256", "1024", "2048", "original")
    r = requests.get(f"{demo_server.url}/mapillary/{im.image_id}", headers=TOKEN, timeout=10,
                     params={"fields": ",".join(f"thumb_{s}_url" for s in sizes)})
    urls = r.json()
    for size in sizes:
        url = urls[f"thumb_{size}_url"]
        assert url.startswith(f"{demo_server.url}/cdn/") and "sig=" in url and "exp=" in url
        got = requests.get(url, timeout=10)
        assert got.status_code == 200 and got.headers["Content-Type"] == "image/jpeg"
        width = 2048 if size == "original" else int(size)
        assert Image.open(io.BytesIO(got.content)).size == (width, width * 3 // 4)
    forged = urls["thumb_256_url"].replace("/256.jpg", "/1024.jpg")
    assert requests.get(forged, timeout=10).status_code == 403
    unsigned = urls["thumb_256_url"].split("?")[0]
    assert requests.get(unsigned, timeout=10).status_code == 403


def test_thumbnail_links_expire(demo_world):
    im = demo_world.images[0]
    with DemoServer(demo_world, thumb_ttl_s=0.0) as server:
        r = requests.get(f"{server.url}/mapillary/{im.image_id}", headers=TOKEN, timeout=10,
                         params={"fields": "thumb_256_url"})
        url = r.json()["thumb_256_url"]
        time.sleep(1.05)  # expiry has one-second resolution
        got = requests.get(url, timeout=10)
        assert got.status_code == 403 and "expired" in got.text
