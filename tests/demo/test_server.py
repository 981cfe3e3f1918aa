"""The server itself: life cycle, robustness against bad requests, concurrency, CLI."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import quote, urlsplit

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from geo_assets.demo.server import DemoServer

TOKEN = {"Authorization": "OAuth demo-token"}


def test_start_stop_and_url(demo_world):
    server = DemoServer(demo_world)
    with pytest.raises(RuntimeError, match="start"):
        _ = server.url
    url = server.start()
    assert url.startswith("http://127.0.0.1:") and server.url == url
    assert server.start() == url  # idempotent
    with requests.Session() as session:  # a keep-alive connection opened before stop()
        assert session.get(url + "/nothing", timeout=5).status_code == 404
        server.stop()
        with pytest.raises(requests.exceptions.ConnectionError):
            session.get(url + "/nothing", timeout=5)
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(url + "/mapillary/images", timeout=2)


def test_unknown_paths_are_404_json(demo_server):
    r = requests.get(demo_server.url + "/nothing/here", timeout=10)
    assert r.status_code == 404 and "error" in r.json()
    assert demo_server.counters["endpoint.unknown"] == 1


def _raw(url: str, payload: bytes) -> bytes:
    host, port = urlsplit(url).netloc.split(":")
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.parametrize("payload", [
    b"GARBAGE\r\n\r\n", b"GET\r\n\r\n", b"\x00\xff\xfe" * 100, b"",
    b"GET /mapillary/images?bbox=%ZZ HTTP/1.1\r\nHost: x\r\n\r\n",
    b"POST /mapillary/images HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",
])
def test_malformed_requests_never_take_the_server_down(demo_server, demo_world, payload):
    _raw(demo_server.url, payload)
    im = demo_world.images[0]
    r = requests.get(f"{demo_server.url}/mapillary/{im.image_id}", headers=TOKEN,
                     params={"fields": "id"}, timeout=10)
    assert r.status_code == 200


def test_concurrent_clients_are_all_served(demo_server, demo_world):
    images = [im for im in demo_world.images if im.artefact != "corrupt"][:40]
    urls = [demo_server.thumbnail_url(im.image_id, "256") for im in images]

    def fetch(url):
        with requests.Session() as s:
            return [s.get(url, timeout=30).status_code for _ in range(3)]

    with ThreadPoolExecutor(8) as pool:
        statuses = [c for codes in pool.map(fetch, urls) for c in codes]
    assert statuses == [200] * 120
    c = demo_server.counters
    assert c["endpoint.cdn.thumbnail"] == 120 and c["status.200"] == 120
    assert demo_server.cache.misses == 40 and demo_server.cache.hits == 80


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_cli_serves_until_interrupted(tmp_path, sig):
    code = ("import signal, sys; signal.signal(signal.SIGINT, signal.SIG_IGN); "  # as `cmd &`
            "from geo_assets.demo.server import cli; sys.exit(cli(sys.argv[1:]))")  # leaves it
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "--port", "0", "--preset", "tiny", "--seed", "1",
         "--faults", "rate_5xx=0.0,seed=4", "--key", "k2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"})
    try:
        first = proc.stdout.readline()
        url = first.split()[2]
        assert url.startswith("http://127.0.0.1:")
        banner = "".join(proc.stdout.readline() for _ in range(2))
        assert "token: demo-token" in banner and "key: k2" in banner
        r = requests.get(url + "/google/maps/api/streetview/metadata", timeout=10,
                         params={"location": "0,0", "key": "k2"})
        assert r.json()["status"] == "ZERO_RESULTS"
    finally:
        proc.send_signal(sig)
        assert proc.wait(timeout=20) == 0


def test_cli_rejects_bad_fault_spec():
    from geo_assets.demo.server import cli
    from geo_assets.errors import InputError

    with pytest.raises(InputError, match="--faults"):
        cli(["--faults", "rate_everything=1"])


def test_geoscout_cli_dispatches_demo_server():
    from pipeline.cli import COMMANDS

    assert COMMANDS["demo-server"][0] == "geo_assets.demo.server"


PATHS = ["/mapillary/images", "/mapillary/image_ids", "/mapillary/123", "/mapillary/",
         "/mapillary/@image",
         "/cdn/mly/1/256.jpg", "/cdn/mly/", "/mapillary-tiles/maps/vtp/mly1_public/2/1/1/1",
         "/mapillary-tiles/maps/vtp/mly1_public/2/", "/google/maps/api/streetview/metadata",
         "/google/maps/api/streetview"]
KEYS = ["bbox", "fields", "limit", "access_token", "sequence_id", "image_ids", "is_pano",
        "location", "pano", "radius", "source", "key", "size", "heading", "pitch", "fov",
        "signature", "exp", "sig", "return_error_code"]


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.sampled_from(PATHS),
       params=st.dictionaries(st.sampled_from(KEYS), st.text(max_size=30) | st.sampled_from(
           ["\u00b2", "1,2,3,4", "640x640", "0.001,0.001,0.002,0.002", "-1", "1e999",
            "inf", "nan", "@pano", "@image", "@location"]),
           max_size=6))
def test_no_query_makes_a_handler_raise(demo_server, demo_world, path, params):
    """Any combination of known parameters with arbitrary values gets an answer."""
    pano, image = demo_world.panoramas[0], demo_world.images[0]
    real = {"@pano": pano.pano_id, "@image": image.image_id,
            "@location": f"{pano.lat},{pano.lon}"}
    params = {"access_token": "demo-token", "key": "demo-key",
              **{k: real.get(v, v) for k, v in params.items()}}
    query = "&".join(f"{k}={quote(v)}" for k, v in params.items())
    endpoint, reply = demo_server.route(path.replace("@image", image.image_id), query, {})
    assert endpoint != "error"
    assert reply.status in (200, 400, 401, 403, 404)
