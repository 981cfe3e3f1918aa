"""The demo Street View Static API over real HTTP: metadata statuses, images, keys, signing."""

from __future__ import annotations

import base64
import io
from urllib.parse import urlencode

import numpy as np
import pytest
import requests
from PIL import Image

from geo_assets.demo.server import DemoServer
from geo_assets.demo.signing import sign_google_url

SV = "/google/maps/api/streetview"
SECRET = base64.urlsafe_b64encode(b"demo signing secret bytes").decode()


def _meta(base, **params):
    params.setdefault("key", "demo-key")
    r = requests.get(f"{base}{SV}/metadata", params=params, timeout=10)
    assert r.status_code == 200  # metadata always answers 200 with a status
    return r.json()


def _offset(lat, metres_north):
    return lat + metres_north / 111_195.0


def _isolated_pano(world, metres=300.0):
    """A panorama with no other within ``metres`` (so snapping has one answer)."""
    lat = np.array([p.lat for p in world.panoramas])
    lon = np.array([p.lon for p in world.panoramas])
    for i, p in enumerate(world.panoramas):
        d = np.hypot(lat - p.lat, (lon - p.lon) * np.cos(np.radians(p.lat))) * 111_195.0
        d[i] = np.inf
        if d.min() > metres:
            return p
    raise AssertionError("no isolated panorama")


def test_metadata_snaps_to_nearest_pano_within_radius(demo_server, demo_world):
    p = _isolated_pano(demo_world)
    body = _meta(demo_server.url, location=f"{_offset(p.lat, 30)},{p.lon}", radius=50,
                 source="outdoor")
    assert body == {"copyright": "© Google", "date": p.date,
                    "location": {"lat": p.lat, "lng": p.lon}, "pano_id": p.pano_id,
                    "status": "OK"}
    far = _meta(demo_server.url, location=f"{_offset(p.lat, 80)},{p.lon}", radius=50)
    assert far == {"status": "ZERO_RESULTS"}
    wide = _meta(demo_server.url, location=f"{_offset(p.lat, 80)},{p.lon}", radius=100)
    assert wide["pano_id"] == p.pano_id
    assert _meta(demo_server.url, location=f"{p.lat},{p.lon}")["status"] == "OK"  # radius 50


def test_metadata_by_pano_id(demo_server, demo_world):
    p = demo_world.panoramas[3]
    assert _meta(demo_server.url, pano=p.pano_id)["location"] == {"lat": p.lat, "lng": p.lon}
    assert _meta(demo_server.url, pano="no-such-pano-id-xxxxxx") == {"status": "ZERO_RESULTS"}


def test_metadata_error_statuses(demo_server):
    base = demo_server.url
    assert _meta(base, location="Nowhere Street 1, Atlantis")["status"] == "NOT_FOUND"
    for params in ({}, {"location": "95,10"}, {"location": "10,10", "radius": "far"},
                   {"location": "10,10", "source": "indoor"}):
        assert _meta(base, **params)["status"] == "INVALID_REQUEST"
    denied = _meta(base, location="10,10", key="wrong")
    assert denied["status"] == "REQUEST_DENIED" and "invalid" in denied["error_message"]
    r = requests.get(f"{base}{SV}/metadata", params={"location": "10,10"}, timeout=10)
    assert r.json()["status"] == "REQUEST_DENIED"


def _image(base, **params):
    params.setdefault("key", "demo-key")
    return requests.get(f"{base}{SV}", params=params, timeout=10)


def test_image_by_pano_and_location(demo_server, demo_world):
    p = demo_world.panoramas[1]
    r = _image(demo_server.url, pano=p.pano_id, size="640x640", heading=90, pitch=0, fov=90)
    assert r.status_code == 200 and r.headers["Content-Type"] == "image/jpeg"
    assert Image.open(io.BytesIO(r.content)).size == (640, 640)
    by_location = _image(demo_server.url, location=f"{p.lat},{p.lon}", size="640x640",
                         heading=90, pitch=0, fov=90)
    assert by_location.content == r.content
    other = _image(demo_server.url, pano=p.pano_id, size="640x640", heading=180)
    assert other.content != r.content
    small = _image(demo_server.url, pano=p.pano_id, size="300x200", heading=90)
    assert Image.open(io.BytesIO(small.content)).size == (300, 200)


def test_no_imagery_is_a_grey_picture_or_404(demo_server):
    r = _image(demo_server.url, location="-30,-30", size="400x400")
    assert r.status_code == 200
    grey = np.asarray(Image.open(io.BytesIO(r.content)))
    assert grey.std() < 2
    assert _image(demo_server.url, location="-30,-30", size="400x400",
                  return_error_code="true").status_code == 404


@pytest.mark.parametrize("params", [
    {"size": "641x640"}, {"size": "640x0"}, {"size": "big"}, {"size": "640x640", "fov": "121"},
    {"size": "640x640", "pitch": "91"}, {"size": "640x640", "heading": "north"},
    {"size": "640x640", "heading": "inf"}, {"size": "640x640", "fov": "nan"}, {},
])
def test_bad_image_parameters_are_400(demo_server, demo_world, params):
    r = _image(demo_server.url, pano=demo_world.panoramas[0].pano_id, **params)
    assert r.status_code == 400 and r.text.startswith("The Google Maps Platform server")


def test_image_needs_location_or_pano(demo_server):
    assert _image(demo_server.url, size="640x640").status_code == 400


def test_image_key_is_checked(demo_server, demo_world):
    pano = demo_world.panoramas[0].pano_id
    assert _image(demo_server.url, pano=pano, size="64x64", key="wrong").status_code == 403
    r = requests.get(f"{demo_server.url}{SV}", params={"pano": pano, "size": "64x64"},
                     timeout=10)
    assert r.status_code == 403


def test_url_signature_is_verified_when_a_secret_is_configured(demo_world):
    pano = demo_world.panoramas[0].pano_id
    query = urlencode({"pano": pano, "size": "64x64", "heading": 0, "key": "demo-key"})
    with DemoServer(demo_world, signing_secret=SECRET) as server:
        url = f"{server.url}{SV}?{query}"
        assert requests.get(url, timeout=10).status_code == 403  # unsigned
        signed = sign_google_url(url, SECRET)
        assert requests.get(signed, timeout=10).status_code == 200
        tampered = signed.replace("heading=0", "heading=1")
        assert requests.get(tampered, timeout=10).status_code == 403
        wrong_secret = sign_google_url(url, base64.urlsafe_b64encode(b"other").decode())
        assert requests.get(wrong_secret, timeout=10).status_code == 403
        meta = requests.get(sign_google_url(
            f"{server.url}{SV}/metadata?pano={pano}&key=demo-key", SECRET), timeout=10)
        assert meta.json()["status"] == "OK"


def test_google_signature_matches_a_published_example():
    """Known answer from the gmapsign project's README (HMAC-SHA1, url-safe base64)."""
    url = ("https://maps.googleapis.com/maps/api/staticmap?center=40.714%2C+-73.998"
           "&client=myclient&size=400x400&zoom=12")
    signed = sign_google_url(url, "bXlrZXk=")
    assert signed == url + "&signature=C1UG9w-v41q7i1lISpZsw1xzOV8="
