"""The HTTP layer against a hostile server: allow-list, redirects, deadline, size cap."""

from __future__ import annotations

import pytest

from geo_assets.clients.http import (
    HttpClient,
    RefusedTargetError,
    RemoteServiceError,
    ResponseTooLargeError,
    TransientServiceError,
)
from geo_assets.settings import HttpSettings, RetryPolicy
from tests.hostile.server import MAX_SEND, Hostile

TOKEN = "MLY|canary-token-5f2e"


def client(hosts=("127.0.0.1",), **settings) -> HttpClient:
    base = {"requests_per_s": 0, "read_timeout_s": 5.0,
            "retry": RetryPolicy(max_retries=1, backoff_base_s=0.01, backoff_max_s=0.02)}
    return HttpClient("mapillary", HttpSettings(**{**base, **settings}), seed=0,
                      sleep=lambda s: None, headers={"Authorization": f"OAuth {TOKEN}"},
                      allowed_hosts=hosts)


@pytest.mark.parametrize("url", [
    "http://169.254.169.254/latest/meta-data/", "file:///etc/passwd", "ftp://127.0.0.1/x",
    "http://user:pw@127.0.0.1/x", "http://127.0.0.1.evil.example/x", "not a url",
])
def test_targets_outside_the_allow_list_are_refused_before_any_connection(url):
    http = client()
    with pytest.raises(RefusedTargetError, match="refused to contact"):
        http.get_bytes(url)
    assert http.counters["requests"] == 0


@pytest.mark.parametrize("location", [
    "http://169.254.169.254/latest/meta-data/", "file:///etc/passwd", "http://localhost:1/x",
])
def test_redirects_leave_the_allow_list_never(location):
    with Hostile() as server:
        server.route("/", "redirect", location=location)
        with pytest.raises(RefusedTargetError):
            client().get_bytes(server.url + "/thumb")
        assert len(server.requests) == 1  # no retry of a refused target either


def test_redirect_loop_is_a_clear_error():
    with Hostile() as server:
        server.route("/", "redirect", location="{base}/again")
        with pytest.raises(RemoteServiceError, match="more than 3 redirects"):
            client(max_redirects=3).get_bytes(server.url + "/start")
        assert len(server.requests) == 4


def test_credentials_do_not_follow_a_redirect_to_another_allowed_host():
    with Hostile("127.0.0.1") as first, Hostile("localhost") as second:
        second.route("/", "bytes", body=b"image bytes")
        port = second.url.rsplit(":", 1)[1]
        first.route("/", "redirect", location=f"http://localhost:{port}/img")
        body = client(hosts=("127.0.0.1", "localhost")).get_bytes(first.url + "/thumb")
        assert body == b"image bytes"
        assert "Authorization" in first.requests[0]["headers"]
        assert "Authorization" not in second.requests[0]["headers"]


def test_a_dripping_body_is_cut_at_the_deadline_and_retryable():
    with Hostile() as server:
        server.route("/", "drip", body=b"x" * 500, interval=0.1)
        with pytest.raises(TransientServiceError, match="no complete answer within 0.5 s"):
            client(deadline_s=0.5).get_bytes(server.url + "/slow")
        # two attempts, each cut off long before the 500 bytes (50 s) were sent
        assert len(server.requests) == 2 and server.sent < 100


def test_a_huge_announced_body_is_refused_before_reading():
    with Hostile() as server:
        server.route("/", "flood", content_length=2 * 1024**3)
        with pytest.raises(ResponseTooLargeError, match="announces 2147483648 bytes"):
            client(max_body_bytes=1024 * 1024).get_bytes(server.url + "/big")
        assert len(server.requests) == 1  # not retried


def test_a_body_longer_than_announced_or_unannounced_stops_at_the_cap():
    with Hostile() as server:
        server.route("/", "bytes", body=b"y" * (3 * 1024 * 1024), announce=False)
        server.route("/lie", "bytes", body=b"y" * (3 * 1024 * 1024), content_length=10)
        http = client(max_body_bytes=1024 * 1024)
        with pytest.raises(ResponseTooLargeError, match="sent more than 1048576 bytes"):
            http.get_bytes(server.url + "/plain")
        assert len(http.get_bytes(server.url + "/lie")) == 10  # the announced length rules
    assert server.sent <= 2 * 3 * 1024 * 1024 <= 2 * MAX_SEND


def test_raw_requests_errors_never_escape():
    with pytest.raises(RemoteServiceError) as info:
        client(hosts=("127.0.0.1",)).get_bytes("http://127.0.0.1:1/closed-port")
    assert type(info.value) is TransientServiceError and "network error" in str(info.value)


def test_memory_stays_bounded_while_a_flood_is_refused():
    import tracemalloc

    with Hostile() as server:
        server.route("/", "bytes", body=b"z" * (8 * 1024 * 1024), announce=False)
        body = b""  # allocated before tracing starts
        tracemalloc.start()
        try:
            with pytest.raises(ResponseTooLargeError):
                body = client(max_body_bytes=512 * 1024).get_bytes(server.url + "/flood")
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert body == b"" and peak < 4 * 1024 * 1024  # the cap and a chunk, not the 8 MB sent


def test_a_secret_echoed_into_a_redirect_never_reaches_the_error_text():
    from urllib.parse import quote

    with Hostile() as server:
        server.route("/", "redirect",
                     location="http://evil.example/steal?t=" + quote(TOKEN, safe="") +
                     "&raw=" + TOKEN)
        with pytest.raises(RefusedTargetError) as info:
            client().get_bytes(server.url + "/thumb")
    text = str(info.value)
    assert "evil.example" in text and "canary" not in text


def test_a_gzip_bomb_is_cut_at_the_cap_of_decoded_bytes():
    import gzip
    import tracemalloc

    bomb = gzip.compress(b"\0" * (200 * 1024 * 1024), compresslevel=9)  # ~200 KB on the wire
    with Hostile() as server:
        server.route("/", "bytes", body=bomb, headers={"Content-Encoding": "gzip"})
        tracemalloc.start()
        try:
            with pytest.raises(ResponseTooLargeError, match="sent more than"):
                client(max_body_bytes=1024 * 1024).get_bytes(server.url + "/bomb")
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert peak < 16 * 1024 * 1024  # not the 200 MB it inflates to
