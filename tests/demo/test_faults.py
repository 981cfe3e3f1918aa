"""Fault injection: every fault on the wire, reproducible by seed, retries can succeed."""

from __future__ import annotations

import io
import time

import pytest
import requests
from PIL import Image

from geo_assets.demo.faults import FaultConfig, FaultInjector
from geo_assets.demo.server import DemoServer

TOKEN = {"Authorization": "OAuth demo-token"}
SV = "/google/maps/api/streetview"


def _box(im, half=0.004):
    return f"{im.lon - half},{im.lat - half},{im.lon + half},{im.lat + half}"


def _search(base, im, timeout=10):
    return requests.get(f"{base}/mapillary/images", headers=TOKEN, timeout=timeout,
                        params={"bbox": _box(im), "fields": "id,thumb_256_url"})


def _faulty(world, **rates) -> DemoServer:
    return DemoServer(world, faults=FaultConfig(seed=1, **rates))


def test_429_comes_with_retry_after(demo_world):
    with _faulty(demo_world, rate_429=1.0) as server:
        r = _search(server.url, demo_world.images[0])
        assert r.status_code == 429 and r.headers["Retry-After"] == "1"
        assert server.counters["fault.429"] == 1


def test_rate_limit_403_has_the_real_code_4_body(demo_world):
    with _faulty(demo_world, rate_rate_limit_403=1.0) as server:
        r = _search(server.url, demo_world.images[0])
        assert r.status_code == 403
        err = r.json()["error"]
        assert (err["code"], err["is_transient"]) == (4, True)
        assert err["message"] == "Application request limit reached"


def test_query_timeout_is_a_transient_400_on_search_only(demo_world):
    im = demo_world.images[0]
    with _faulty(demo_world, rate_query_timeout_400=1.0) as server:
        r = _search(server.url, im)
        assert r.status_code == 400
        assert r.json()["error"]["error_subcode"] == 3404014
        assert r.json()["error"]["is_transient"] is True
        entity = requests.get(f"{server.url}/mapillary/{im.image_id}", headers=TOKEN,
                              params={"fields": "id"}, timeout=10)
        assert entity.status_code == 200


def test_5xx_on_every_endpoint(demo_world):
    im, pano = demo_world.images[0], demo_world.panoramas[0]
    with _faulty(demo_world, rate_5xx=1.0) as server:
        r = _search(server.url, im)
        assert r.status_code == 500 and r.json()["error"]["is_transient"] is True
        assert requests.get(server.thumbnail_url(im.image_id), timeout=10).status_code >= 500
        tile = requests.get(f"{server.url}/mapillary-tiles/maps/vtp/mly1_public/2/0/0/0",
                            timeout=10)
        assert tile.status_code >= 500
        meta = requests.get(f"{server.url}{SV}/metadata", timeout=10,
                            params={"pano": pano.pano_id, "key": "demo-key"})
        assert meta.status_code == 200 and meta.json()["status"] == "UNKNOWN_ERROR"
        img = requests.get(f"{server.url}{SV}", timeout=10,
                           params={"pano": pano.pano_id, "size": "64x64", "key": "demo-key"})
        assert img.status_code >= 500
        assert server.counters["fault.5xx"] == 5


def test_over_query_limit_on_metadata(demo_world):
    with _faulty(demo_world, rate_429=1.0) as server:
        meta = requests.get(f"{server.url}{SV}/metadata", timeout=10, params={
            "pano": demo_world.panoramas[0].pano_id, "key": "demo-key"})
        assert meta.json()["status"] == "OVER_QUERY_LIMIT"


def test_slow_responses_outlast_a_short_client_timeout(demo_world):
    im = demo_world.images[0]
    with DemoServer(demo_world, faults=FaultConfig(rate_slow=1.0, slow_seconds=0.6)) as server:
        with pytest.raises(requests.exceptions.ReadTimeout):
            _search(server.url, im, timeout=0.2)
        start = time.perf_counter()
        r = _search(server.url, im, timeout=5)
        assert r.status_code == 200 and time.perf_counter() - start >= 0.55
        assert server.counters["fault.slow"] == 2


def test_dropped_connections(demo_world):
    with _faulty(demo_world, rate_drop_connection=1.0) as server:
        with pytest.raises(requests.exceptions.ConnectionError):
            _search(server.url, demo_world.images[0])
        assert server.counters["fault.drop_connection"] == 1


def test_truncated_and_non_image_bodies(demo_world):
    im = next(i for i in demo_world.images if i.artefact is None)
    for fault in ("truncated_jpeg", "non_image"):
        with _faulty(demo_world, **{f"rate_{fault}": 1.0}) as server:
            r = requests.get(server.thumbnail_url(im.image_id, "256"), timeout=10)
            assert r.status_code == 200 and r.headers["Content-Type"] == "image/jpeg"
            with pytest.raises(OSError):
                Image.open(io.BytesIO(r.content)).load()
            assert server.counters[f"fault.{fault}"] == 1


def _statuses(world, seed, n=30):
    config = FaultConfig(seed=seed, rate_5xx=0.3, rate_429=0.2)
    with DemoServer(world, faults=config) as server:
        return [_search(server.url, im).status_code for im in world.images[:n]]


def test_faults_are_reproducible_by_seed(demo_world):
    first = _statuses(demo_world, seed=5)
    assert first == _statuses(demo_world, seed=5)
    assert first != _statuses(demo_world, seed=6)
    assert {200, 429, 500} <= set(first)


def test_retries_succeed_and_counters_add_up(demo_world):
    config = FaultConfig(seed=2, rate_5xx=0.4, rate_429=0.3)
    with DemoServer(demo_world, faults=config) as server:
        attempts = 0
        for im in demo_world.images[:10]:
            for _ in range(30):
                attempts += 1
                if _search(server.url, im).status_code == 200:
                    break
            else:
                pytest.fail("a retried request never succeeded")
        c = server.counters
        assert c["endpoint.mapillary.images"] == attempts
        assert c["status.200"] == 10
        assert c["status.500"] == c["fault.5xx"] and c["status.429"] == c["fault.429"]
        assert c["fault.5xx"] + c["fault.429"] == attempts - 10


def test_injector_draws_a_fresh_fate_per_attempt():
    injector = FaultInjector(FaultConfig(seed=0, rate_5xx=0.5))
    fates = [injector.decide("image", "/same") for _ in range(200)]
    assert 60 < fates.count("5xx") < 140
    again = FaultInjector(FaultConfig(seed=0, rate_5xx=0.5))
    assert [again.decide("image", "/same") for _ in range(200)] == fates


def test_fault_spec_parsing():
    config = FaultConfig.from_spec("rate_5xx=0.1, rate_429=0.05,seed=3,slow_seconds=1.5")
    assert (config.rate_5xx, config.rate_429, config.seed, config.slow_seconds) == (
        0.1, 0.05, 3, 1.5)
    with pytest.raises(ValueError, match="rate_typo"):
        FaultConfig.from_spec("rate_typo=1")
