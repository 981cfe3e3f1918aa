"""The HTTP layer: retries with backoff honouring Retry-After, no retry on bad credentials,
timeouts, dropped connections, and the thread-safe rate limiter."""

from __future__ import annotations

import threading

import pytest

from geo_assets.clients.http import (
    CredentialError,
    HttpClient,
    QuotaExceededError,
    RateLimiter,
    TransientServiceError,
    parse_retry_after,
)
from geo_assets.clients.mapillary import classify_graph
from geo_assets.settings import HttpSettings, RetryPolicy
from tests.ingest.ingest_helpers import Scripted

OK = (200, {"data": []}, {"Content-Type": "application/json"})
LIMIT_403 = (403, {"error": {"message": "Application request limit reached",
                             "type": "MLYApiException", "is_transient": True, "code": 4}}, {})
BAD_TOKEN = (401, {"error": {"message": "Invalid OAuth 2.0 Access Token",
                             "type": "MLYApiException", "code": 190}}, {})
QUERY_TIMEOUT = (400, {"error": {"message": "Query Timeout", "code": 1,
                                 "error_subcode": 3404014}}, {})


def client(sleeps: list, max_retries: int = 4, read_timeout: float = 5.0) -> HttpClient:
    settings = HttpSettings(read_timeout_s=read_timeout, requests_per_s=0,
                            retry=RetryPolicy(max_retries=max_retries, backoff_base_s=0.01,
                                              backoff_max_s=0.05))
    return HttpClient("mapillary", settings, classify=classify_graph, seed=1,
                      sleep=sleeps.append, headers={"Authorization": "OAuth MLY|secret-token"},
                      allowed_hosts=("127.0.0.1",))


@pytest.mark.parametrize("failure", [
    (503, b"busy", {}), LIMIT_403, QUERY_TIMEOUT, "drop",
    (429, b"slow down", {"Retry-After": "0"}),
])
def test_transient_failures_are_retried_until_success(failure):
    sleeps: list[float] = []
    with Scripted([failure, failure, OK]) as server:
        body = client(sleeps).get_json(server.url + "/images")
        assert body == {"data": []}
        assert len(server.requests) == 3
    assert len(sleeps) == 2


def test_retry_after_is_honoured_and_backoff_grows():
    sleeps: list[float] = []
    replies = [(429, b"", {"Retry-After": "0.3"})] + [(503, b"", {})] * 4 + [OK]
    with Scripted(replies) as server:
        client(sleeps, max_retries=6).get_json(server.url + "/x")
    assert sleeps[0] >= 0.3  # never sooner than the server asked
    assert all(0 <= s <= 0.05 for s in sleeps[1:])  # jittered, capped exponential backoff
    policy = RetryPolicy(backoff_base_s=1.0, backoff_max_s=100.0)
    import random

    rng = random.Random(0)
    means = [sum(policy.delay(a, None, rng) for _ in range(400)) / 400 for a in range(4)]
    assert means[0] < means[1] < means[2] < means[3]


def test_invalid_token_is_not_retried_and_says_what_to_do():
    sleeps: list[float] = []
    with Scripted([BAD_TOKEN, OK]) as server:
        with pytest.raises(CredentialError) as err:
            client(sleeps).get_json(server.url + "/images")
        assert len(server.requests) == 1
    assert "MAPILLARY_TOKEN" in str(err.value)
    assert "secret-token" not in str(err.value)
    assert sleeps == []


def test_token_travels_as_a_header_not_in_the_url():
    with Scripted([OK]) as server:
        client([]).get_json(server.url + "/images", params={"bbox": "1,2,3,4"})
        request = server.requests[0]
    assert request["headers"]["Authorization"] == "OAuth MLY|secret-token"
    assert "secret-token" not in request["path"]


def test_persistent_failure_raises_a_transient_error_for_a_later_retry():
    with Scripted([(500, b"", {})]) as server:
        with pytest.raises(TransientServiceError, match="retry later"):
            client([], max_retries=2).get_json(server.url + "/x")
        assert len(server.requests) == 3


def test_long_retry_after_means_quota_exhausted():
    with Scripted([(429, b"", {"Retry-After": "3600"})]) as server:
        with pytest.raises(QuotaExceededError, match="quota"):
            client([]).get_json(server.url + "/x")
        assert len(server.requests) == 1


def test_read_timeout_is_retried():
    sleeps: list[float] = []
    with Scripted([("sleep", 1.0, OK), OK]) as server:
        body = client(sleeps, read_timeout=0.2).get_json(server.url + "/x")
    assert body == {"data": []}
    assert len(sleeps) == 1


def test_parse_retry_after_accepts_seconds_and_http_dates():
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past
    assert parse_retry_after("soon") is None


def test_rate_limiter_spaces_requests_across_threads():
    sleeps: list[float] = []
    limiter = RateLimiter(rate=10.0, burst=1, clock=lambda: 0.0, sleep=sleeps.append)
    threads = [threading.Thread(target=limiter.acquire) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # at a frozen instant, 20 callers get slots 0.1 s apart: one waits 0.1, ..., one 1.9
    assert sorted(sleeps) == pytest.approx([k / 10 for k in range(1, 20)])


def test_rate_limiter_in_real_time():
    import time

    limiter = RateLimiter(rate=100.0, burst=1)
    start = time.monotonic()
    for _ in range(21):
        limiter.acquire()
    assert time.monotonic() - start >= 0.19
