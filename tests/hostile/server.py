"""A hostile HTTP server on loopback, for the tests of issue 14.

Each route (a path prefix) maps to a behaviour; every behaviour is bounded: a reply sends at
most ``MAX_SEND`` bytes and lasts at most ``MAX_SECONDS``, so a test that fails to cut a
connection short still ends. The server records every request (path, query, headers) and the
bytes it sent, so tests can assert what a client did *not* do.

Behaviours (``Hostile.route(prefix, kind, **options)``):

- ``json``: a JSON body (``body=``), with ``status=`` and ``headers=``;
- ``bytes``: a raw body (``body=``), with ``content_length=`` to announce another size or
  ``announce=False`` to send no length at all (the body ends when the connection closes);
- ``drip``: ``body=`` sent one byte every ``interval=`` seconds;
- ``flood``: announces ``content_length=`` bytes and streams zeros (up to ``MAX_SEND``);
- ``redirect``: 302 to ``location=`` (a format string: ``{base}`` is this server's URL);
- ``echo``: ``status=`` with a JSON body that echoes the request's path, query and headers
  (a server that leaks the credentials it was sent back into error texts);
- ``proxy``: forwards to ``upstream=`` but, the first time it sees one in ``echo_every=``
  requests (by a hash of path and query), answers 429 with the request's credentials echoed
  in the error message, and adds to every image search result an entity whose fields carry
  the credentials (a server that echoes secrets into data).
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

MAX_SEND = 8 * 1024 * 1024
MAX_SECONDS = 20.0


class _Quiet(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        pass  # clients that hang up early are the point of these tests


class Hostile:
    def __init__(self, host: str = "127.0.0.1") -> None:
        self.routes: list[tuple[str, str, dict]] = []
        self.requests: list[dict] = []
        self.sent = 0
        self.seen: set[str] = set()
        self.echoes = 0  # proxy answers that echoed a credential
        self._lock = threading.Lock()
        self.httpd = _Quiet((host, 0), self._handler())
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def route(self, prefix: str, kind: str, **options) -> Hostile:
        self.routes.insert(0, (prefix, kind, options))  # later routes win
        return self

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def _count(self, n: int) -> None:
        with self._lock:
            self.sent += n

    def _handler(self):
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                with outer._lock:
                    outer.requests.append({"path": parts.path, "query": parts.query,
                                           "headers": dict(self.headers)})
                for prefix, kind, options in outer.routes:
                    if parts.path.startswith(prefix):
                        try:
                            getattr(self, f"_{kind}")(**options)
                        except (BrokenPipeError, ConnectionResetError):
                            pass
                        return
                self._json(body={"error": "no route"}, status=404)

            def _head(self, status: int, length: int | None, headers: dict | None = None):
                self.send_response(status)
                if length is not None:
                    self.send_header("Content-Length", str(length))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()

            def _bytes(self, body: bytes = b"", status: int = 200, headers=None,
                       content_length: int | None = None, announce: bool = True) -> None:
                length = len(body) if content_length is None else content_length
                self._head(status, length if announce else None,
                           headers if announce else {**(headers or {}), "Connection": "close"})
                if not announce:  # the body ends when the connection closes
                    self.close_connection = True
                self.wfile.write(body[:MAX_SEND])
                outer._count(len(body[:MAX_SEND]))
                if content_length is not None and content_length != len(body):
                    self.close_connection = True

            def _json(self, body=None, status: int = 200, headers=None) -> None:
                data = json.dumps(body).encode()
                self._bytes(data, status, {"Content-Type": "application/json",
                                           **(headers or {})})

            def _drip(self, body: bytes = b"x" * 1000, interval: float = 0.2) -> None:
                self._head(200, len(body))
                end = time.monotonic() + MAX_SECONDS
                for i in range(len(body)):
                    if time.monotonic() > end:
                        break
                    self.wfile.write(body[i:i + 1])
                    self.wfile.flush()
                    outer._count(1)
                    time.sleep(interval)
                self.close_connection = True

            def _flood(self, content_length: int = 2 * 1024**3) -> None:
                self._head(200, content_length)
                chunk = b"\0" * 65536
                end = time.monotonic() + MAX_SECONDS
                sent = 0
                while sent < MAX_SEND and time.monotonic() < end:
                    self.wfile.write(chunk)
                    sent += len(chunk)
                    outer._count(len(chunk))
                self.close_connection = True

            def _redirect(self, location: str, status: int = 302) -> None:
                self._head(status, 0, {"Location": location.format(base=outer.url)})

            def _echo(self, status: int = 500) -> None:
                query = dict(parse_qsl(urlsplit(self.path).query))
                self._json(body={"error": {"message": f"bad request {self.path} with "
                                           f"{dict(self.headers)}", "query": query}},
                           status=status)

            def _proxy(self, upstream: str, echo_every: int = 4) -> None:
                import requests

                secret = self.headers.get("Authorization", "").removeprefix("OAuth ")
                query = dict(parse_qsl(urlsplit(self.path).query))
                secret = secret or query.get("key", "")
                digest = hashlib.blake2b(self.path.encode(), digest_size=4).digest()
                with outer._lock:
                    first = self.path not in outer.seen
                    outer.seen.add(self.path)
                if first and int.from_bytes(digest, "big") % echo_every == 0:
                    with outer._lock:
                        outer.echoes += 1
                    self._json(body={"error": {"message": f"rate limited for {secret} on "
                                               f"{self.path}", "code": 4}}, status=429,
                               headers={"Retry-After": "0"})
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                r = requests.get(upstream + self.path, headers=headers, timeout=30)
                body = r.content
                if "/images" in self.path and r.ok and "data" in r.text:
                    data = r.json()
                    if data["data"]:
                        leaky = dict(data["data"][0], id="777" + str(len(data["data"])),
                                     captured_at=secret, creator={"username": secret})
                        data["data"].append(leaky)
                        with outer._lock:
                            outer.echoes += 1
                    body = json.dumps(data).encode()
                keep = {k: v for k, v in r.headers.items()
                        if k.lower() in ("content-type", "retry-after")}
                self._bytes(body, r.status_code, keep)

        return Handler
