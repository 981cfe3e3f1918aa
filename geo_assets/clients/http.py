"""A polite HTTP client: pooled connections, timeouts, retries with backoff, a rate limit.

One :class:`HttpClient` per API. Every request goes through :meth:`HttpClient.request`, which

- waits for the thread-safe :class:`RateLimiter` (requests per second, shared by threads);
- sends with a (connect, read) timeout on a pooled ``requests.Session``;
- classifies the outcome with the API's ``classify`` callback (transient, fatal or fine);
- retries transient failures with exponential backoff and full jitter, honouring a
  ``Retry-After`` header, up to ``max_retries`` times;
- raises :class:`TransientServiceError` (retry the cell later), :class:`CredentialError` or
  :class:`RemoteServiceError` with a redacted message: no secret reaches an exception.
"""

from __future__ import annotations

import email.utils
import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Callable

import requests
from requests.adapters import HTTPAdapter

from geo_assets.clients.redact import Redactor, install_log_redaction, redact_url
from geo_assets.errors import RemoteServiceError
from geo_assets.settings import HttpSettings

log = logging.getLogger("geoscout.http")

USER_AGENT = "geoscout/0.1 (+https://github.com/geoscout; image-geolocation datasets)"


class TransientServiceError(RemoteServiceError):
    """The service failed in a way that may pass: retry the cell later."""


class QuotaExceededError(TransientServiceError):
    """The API's request quota is used up for now (rate limit that outlasted the retries)."""


class CredentialError(RemoteServiceError):
    """The token or key is missing, invalid or not allowed: fix the credential, do not retry."""


class NotFoundError(RemoteServiceError):
    """The resource does not exist (HTTP 404)."""


class RateLimiter:
    """Token bucket shared by threads: at most ``rate`` acquisitions per second on average,
    with bursts of up to ``burst``. Sleeps outside the lock."""

    def __init__(self, rate: float, burst: int = 1, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.rate = rate
        self.burst = max(1, burst)
        self._clock, self._sleep = clock, sleep
        self._lock = threading.Lock()
        self._tokens = float(self.burst)
        self._last = clock()

    def acquire(self) -> float:
        """Take one token, waiting if needed; returns the seconds waited."""
        if self.rate <= 0:
            return 0.0
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
            self._last = now
            self._tokens -= 1.0
            wait = 0.0 if self._tokens >= 0 else -self._tokens / self.rate
        if wait > 0:
            self._sleep(wait)
        return wait


Verdict = tuple[str, str]  # (kind, message): kind in ok | transient | credential | fatal | quota


def default_classify(response: requests.Response) -> Verdict:
    status = response.status_code
    if status < 400:
        return "ok", ""
    if status == 429:
        return "quota", "rate limited (HTTP 429)"
    if status in (401, 403):
        return "credential", f"access denied (HTTP {status})"
    if status == 404:
        return "not_found", "not found (HTTP 404)"
    if status >= 500 or status == 408:
        return "transient", f"server error (HTTP {status})"
    return "fatal", f"request rejected (HTTP {status})"


def parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


_TRANSIENT_EXC = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError,
                  requests.exceptions.ContentDecodingError)


class HttpClient:
    """Pooled, rate-limited, retrying HTTP for one API. Thread-safe."""

    def __init__(self, name: str, settings: HttpSettings | None = None, *,
                 redactor: Redactor | None = None, headers: dict[str, str] | None = None,
                 classify: Callable[[requests.Response], Verdict] = default_classify,
                 seed: int | None = None, sleep: Callable[[float], None] = time.sleep) -> None:
        self.name = name
        self.settings = settings or HttpSettings()
        self.redactor = redactor or Redactor()
        install_log_redaction()
        self.classify = classify
        self.limiter = RateLimiter(self.settings.requests_per_s, self.settings.burst)
        self.counters: Counter[str] = Counter()
        self._counter_lock = threading.Lock()
        self._rng = random.Random(seed)
        self._sleep = sleep
        self.session = requests.Session()
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=self.settings.pool_size,
                              max_retries=0)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.headers.update({"User-Agent": USER_AGENT, **(headers or {})})

    def close(self) -> None:
        self.session.close()

    def count(self, key: str, n: int = 1) -> None:
        with self._counter_lock:
            self.counters[key] += n

    def request(self, method: str, url: str, *, params: dict | None = None,
                what: str | None = None, headers: dict | None = None) -> requests.Response:
        """Send with retries; return the final successful response (body read)."""
        label = what or f"{method} {redact_url(url)}"
        policy = self.settings.retry
        for attempt in range(policy.max_retries + 1):
            kind, message, retry_after, response = self._attempt(method, url, params, headers)
            if kind == "ok":
                return response
            if kind in ("credential", "fatal", "not_found"):
                raise self._final_error(kind, f"{self.name}: {label}: {message}")
            if attempt == policy.max_retries:
                break
            if retry_after is not None and retry_after > policy.max_retry_after_s:
                raise QuotaExceededError(self.redactor(
                    f"{self.name}: {label}: {message}; the server asks to wait {retry_after:.0f} s;"
                    " the request quota is used up for now, retry this cell later"))
            delay = policy.delay(attempt, retry_after, self._rng)
            self.count("retries")
            log.debug(self.redactor(f"{self.name}: {label}: {message}; retry in {delay:.2f} s"))
            self._sleep(delay)
        error = QuotaExceededError if kind == "quota" else TransientServiceError
        raise error(self.redactor(
            f"{self.name}: {label}: {message} after {policy.max_retries + 1} attempts;"
            " the service is failing or rate limiting: retry later"))

    def _attempt(self, method, url, params, headers):
        self.limiter.acquire()
        self.count("requests")
        timeout = (self.settings.connect_timeout_s, self.settings.read_timeout_s)
        try:
            response = self.session.request(method, url, params=params, headers=headers,
                                            timeout=timeout)
            _ = response.content  # read the body inside the retry loop
        except _TRANSIENT_EXC as exc:
            self.count("network_errors")
            return "transient", f"network error ({type(exc).__name__})", None, None
        kind, message = self.classify(response)
        if kind != "ok":
            self.count(f"http_{response.status_code}")
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        return kind, message, retry_after, response

    def _final_error(self, kind: str, message: str) -> RemoteServiceError:
        text = self.redactor(message)
        if kind == "credential":
            return CredentialError(text)
        if kind == "not_found":
            return NotFoundError(text)
        return RemoteServiceError(text)

    def get_json(self, url: str, *, params: dict | None = None, what: str | None = None):
        response = self.request("GET", url, params=params, what=what)
        try:
            return response.json()
        except ValueError:
            raise TransientServiceError(self.redactor(
                f"{self.name}: {what or redact_url(url)}: response is not JSON")) from None

    def get_bytes(self, url: str, *, what: str | None = None) -> bytes:
        return self.request("GET", url, what=what).content
