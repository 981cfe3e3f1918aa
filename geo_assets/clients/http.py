"""A polite HTTP client: pooled connections, timeouts, retries with backoff, a rate limit.

One :class:`HttpClient` per API. Every request goes through :meth:`HttpClient.request`, which

- waits for the thread-safe :class:`RateLimiter` (requests per second, shared by threads);
- sends only to allowed hosts (``http``/``https``, host names matching the client's
  allow-list) and follows redirects itself, each hop checked against the same list (the
  ``Authorization`` header never follows a redirect to another host);
- sends with a (connect, read) timeout on a pooled ``requests.Session`` and streams the body
  under an overall per-attempt deadline and a size cap (``HttpSettings.deadline_s``,
  ``max_body_bytes``): a dripping or huge body is cut off, never buffered whole;
- classifies the outcome with the API's ``classify`` callback (transient, fatal or fine);
- retries transient failures with exponential backoff and full jitter, honouring a
  ``Retry-After`` header, up to ``max_retries`` times;
- raises :class:`TransientServiceError` (retry the cell later), :class:`CredentialError` or
  :class:`RemoteServiceError` with a redacted message: no secret reaches an exception.
"""

from __future__ import annotations

import email.utils
import fnmatch
import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from urllib.parse import urljoin, urlsplit

import requests
import urllib3
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


class RefusedTargetError(RemoteServiceError):
    """A request or redirect aimed at a host or scheme outside the client's allow-list."""


class ResponseTooLargeError(RemoteServiceError):
    """The response body is larger than ``HttpSettings.max_body_bytes``."""


class _DeadlineExceeded(Exception):
    pass


def host_allowed(url: str, patterns: tuple[str, ...]) -> bool:
    """True for an http(s) URL whose host name matches one of ``patterns`` (fnmatch)."""
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or not host or parts.username or parts.password:
        return False
    return any(fnmatch.fnmatchcase(host, p.lower()) for p in patterns)


def url_host(url: str) -> str:
    """The host name of ``url`` (for building allow-lists from configured base URLs)."""
    return (urlsplit(url).hostname or "").lower()


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
                  requests.exceptions.ContentDecodingError, urllib3.exceptions.HTTPError,
                  ConnectionError, TimeoutError)
_CHUNK = 64 * 1024


class HttpClient:
    """Pooled, rate-limited, retrying HTTP for one API. Thread-safe."""

    def __init__(self, name: str, settings: HttpSettings | None = None, *,
                 redactor: Redactor | None = None, headers: dict[str, str] | None = None,
                 classify: Callable[[requests.Response], Verdict] = default_classify,
                 seed: int | None = None, sleep: Callable[[float], None] = time.sleep,
                 allowed_hosts: tuple[str, ...] = ()) -> None:
        self.name = name
        self.settings = settings or HttpSettings()
        self.allowed_hosts = tuple(dict.fromkeys(
            h for h in (*allowed_hosts, *self.settings.extra_hosts) if h))
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
        self._check_target(url, label)
        policy = self.settings.retry
        give_up_at = time.monotonic() + self.settings.total_deadline_s
        for attempt in range(policy.max_retries + 1):
            kind, message, retry_after, response = self._attempt(method, url, params, headers,
                                                                 label)
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
            if time.monotonic() + delay > give_up_at:
                message += f"; gave up at the {self.settings.total_deadline_s:g} s deadline"
                break
            self.count("retries")
            log.debug(self.redactor(f"{self.name}: {label}: {message}; retry in {delay:.2f} s"))
            self._sleep(delay)
        error = QuotaExceededError if kind == "quota" else TransientServiceError
        raise error(self.redactor(
            f"{self.name}: {label}: {message} after {attempt + 1} attempts;"
            " the service is failing or rate limiting: retry later"))

    def _check_target(self, url: str, label: str) -> None:
        if not host_allowed(url, self.allowed_hosts):
            self.count("refused_targets")
            raise RefusedTargetError(self.redactor(
                f"{self.name}: {label}: refused to contact {self.redactor(redact_url(url))[:200]}: only http(s) "
                f"to {', '.join(self.allowed_hosts) or 'no host'} is allowed (add a host to "
                "HttpSettings.extra_hosts if you trust it)"))

    def _attempt(self, method, url, params, headers, label):
        self.limiter.acquire()
        self.count("requests")
        deadline = time.monotonic() + self.settings.deadline_s
        try:
            response = self._send(method, url, params, headers, label, deadline)
            self._read_body(response, label, deadline)
        except (RefusedTargetError, ResponseTooLargeError):
            raise
        except _DeadlineExceeded:
            self.count("deadline_exceeded")
            return ("transient", f"no complete answer within {self.settings.deadline_s:g} s",
                    None, None)
        except _TRANSIENT_EXC as exc:
            self.count("network_errors")
            return "transient", f"network error ({type(exc).__name__})", None, None
        except requests.RequestException as exc:  # invalid URL, schema, header: never retried
            raise RemoteServiceError(self.redactor(
                f"{self.name}: {label}: request failed ({type(exc).__name__})")) from None
        kind, message = self.classify(response)
        if kind != "ok":
            self.count(f"http_{response.status_code}")
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        return kind, message, retry_after, response

    def _send(self, method, url, params, headers, label, deadline) -> requests.Response:
        """Send, following redirects only to allowed hosts; the response body is unread."""
        timeout = (self.settings.connect_timeout_s, self.settings.read_timeout_s)
        origin = url_host(url)
        for _ in range(self.settings.max_redirects + 1):
            response = self.session.request(method, url, params=params, headers=headers,
                                            timeout=timeout, stream=True, allow_redirects=False)
            if not response.is_redirect:
                return response
            target = urljoin(url, response.headers.get("Location", ""))
            response.close()
            self.count("redirects")
            self._check_target(target, label)
            if time.monotonic() > deadline:
                raise _DeadlineExceeded
            url, params, method = target, None, "GET"
            if url_host(url) != origin:  # credentials never follow to another host
                headers = {**(headers or {}), "Authorization": None}
        raise RemoteServiceError(self.redactor(
            f"{self.name}: {label}: more than {self.settings.max_redirects} redirects"))

    def _read_body(self, response: requests.Response, label: str, deadline: float) -> None:
        """Read the body in chunks under the deadline and the size cap into ``.content``."""
        cap = self.settings.max_body_bytes
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > cap:
            response.close()
            raise self._too_large(label, f"announces {int(declared)} bytes")
        chunks, size = [], 0
        try:
            while True:
                if time.monotonic() > deadline:
                    raise _DeadlineExceeded
                chunk = response.raw.read1(_CHUNK, decode_content=True)
                if not chunk:
                    break
                size += len(chunk)
                if size > cap:
                    raise self._too_large(label, f"sent more than {cap} bytes")
                chunks.append(chunk)
        finally:
            response.close()
        response._content = b"".join(chunks)
        response._content_consumed = True

    def _too_large(self, label: str, detail: str) -> ResponseTooLargeError:
        self.count("too_large")
        return ResponseTooLargeError(self.redactor(
            f"{self.name}: {label}: the response {detail}, over the limit of "
            f"{self.settings.max_body_bytes} bytes (HttpSettings.max_body_bytes)"))

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
