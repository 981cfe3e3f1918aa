"""A loopback HTTP server answering like Mapillary Graph API v4 and the Street View Static API.

One port, path prefixes (``base`` is ``DemoServer.url``)::

    {base}/mapillary/images?bbox=minLon,minLat,maxLon,maxLat&fields=...&limit=N
    {base}/mapillary/image_ids?sequence_id=...
    {base}/mapillary/{image_id}?fields=...
    {base}/cdn/mly/{image_id}/{256|1024|2048|original}.jpg?exp=...&sig=...   (signed, expiring)
    {base}/mapillary-tiles/maps/vtp/mly1_public/2/{z}/{x}/{y}[?access_token=]  (coverage)
    {base}/google/maps/api/streetview/metadata?location=lat,lng&radius=50&source=outdoor&key=
    {base}/google/maps/api/streetview?pano=...|location=...&size=WxH&heading=&pitch=&fov=&key=

The Mapillary token goes in ``Authorization: OAuth <token>`` or ``access_token``; the Google
key in ``key`` (and ``signature`` when a signing secret is set). Faults are injected per
``FaultConfig``; ``counters`` says what was served. Run it with ``geoscout demo-server``, or::

    with DemoServer(generate_world(0, "tiny")) as server:
        requests.get(f"{server.url}/mapillary/images", timeout=10,
                     headers={"Authorization": "OAuth demo-token"},
                     params={"bbox": "...", "fields": "id,geometry,thumb_1024_url"})
"""

from __future__ import annotations

import argparse
import secrets
import signal
import socket
import threading
import time
from collections import Counter
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self
from urllib.parse import parse_qsl, urlsplit

import numpy as np

from geo_assets.demo import mapillary_api as mly
from geo_assets.demo.faults import FaultConfig, FaultInjector
from geo_assets.demo.render import RenderCache, no_imagery_jpeg, render_image
from geo_assets.demo.reply import Reply, json_reply, text_reply
from geo_assets.demo.signing import ThumbSigner
from geo_assets.demo.streetview_api import ImageRequest, StreetViewAPI
from geo_assets.demo.tiles import TILE_PREFIX, CoverageTiles
from geo_assets.demo.world import DemoWorld, generate_world
from geo_assets.errors import InputError

SV_PREFIX = "/google/maps/api/streetview"
VOLATILE_PARAMS = frozenset({"access_token", "key", "signature", "exp", "sig"})
JPEG = "image/jpeg"


class DemoServer:
    """The demo API server for ``world`` on ``host:port`` (port 0: any free port)."""

    def __init__(self, world: DemoWorld, *, host: str = "127.0.0.1", port: int = 0,
                 mapillary_token: str = "demo-token", google_key: str = "demo-key",
                 signing_secret: str | None = None, faults: FaultConfig | None = None,
                 max_bbox_deg: float = 0.01, thumb_ttl_s: float = 600.0,
                 cache_bytes: int = 256 * 2**20, latency_s: float = 0.0):
        self.world = world
        self.latency_s = latency_s  # added to every reply: a distant server, for benchmarks
        self.host, self.port = host, port
        self.faults = FaultInjector(faults)
        self.signer = ThumbSigner(secrets.token_bytes(32), thumb_ttl_s)
        self.cache = RenderCache(cache_bytes)
        self.mapillary = mly.MapillaryAPI(world, mapillary_token, self.thumbnail_url,
                                         max_bbox_deg)
        self.streetview = StreetViewAPI(world, google_key, signing_secret)
        self.tiles = CoverageTiles(world)
        self._counters: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- life cycle -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("the demo server is not running: call start() first")
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> str:
        """Start serving in a background thread; returns the base URL."""
        if self._httpd is None:
            self._httpd = _HTTPServer((self.host, self.port), _Handler)
            self._httpd.demo = self
            self._thread = threading.Thread(target=self._httpd.serve_forever,
                                            kwargs={"poll_interval": 0.1},
                                            name="demo-server", daemon=True)
            self._thread.start()
        return self.url

    def stop(self) -> None:
        """Stop listening; open keep-alive connections are closed at their next request."""
        if self._httpd is not None:
            self._httpd.stopping = True
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join(timeout=5)
            self._httpd = self._thread = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def hold_back(self, image_ids) -> None:
        """Hide these Mapillary images from searches until ``publish``: imagery that the
        service adds later (a re-crawl should find it)."""
        self.mapillary.held_back |= np.isin(self.mapillary.ids, list(image_ids))

    def publish(self, image_ids=None) -> None:
        """Make held-back images searchable (all of them when ``image_ids`` is None)."""
        api = self.mapillary
        api.held_back &= np.zeros(len(api.ids), bool) if image_ids is None else \
            ~np.isin(api.ids, list(image_ids))

    @property
    def counters(self) -> dict[str, int]:
        """Requests served per endpoint (``endpoint.<name>``), per status
        (``status.<code>``) and per injected fault (``fault.<name>``); body bytes sent per
        endpoint (``bytes.<name>``)."""
        with self._lock:
            return dict(self._counters)

    def count(self, counts: dict[str, int]) -> None:
        with self._lock:
            self._counters.update(counts)

    # --- routing ----------------------------------------------------------------------------

    def route(self, path: str, raw_query: str, headers) -> tuple[str, Reply]:
        """(endpoint name, reply) for a GET request."""
        params = dict(parse_qsl(raw_query, keep_blank_values=True))
        if path.startswith("/mapillary/"):
            return self._mapillary(path[len("/mapillary/"):], params, headers)
        if path.startswith("/cdn/mly/"):
            return "cdn.thumbnail", self._thumbnail(path, params)
        if path.startswith(TILE_PREFIX):
            if "access_token" in params and not self.mapillary.authorised(params, {}):
                return "tiles", mly.invalid_token()  # no token is tolerated, a wrong one not
            return "tiles", self._fault_or("tiles", path, lambda: self.tiles.reply(path))
        if path == SV_PREFIX + "/metadata":
            return "streetview.metadata", self._fault_or(
                "streetview.metadata", _fault_key(path, params),
                lambda: self.streetview.metadata(path, params, raw_query))
        if path == SV_PREFIX:
            return "streetview.image", self._streetview_image(path, params, raw_query)
        return "unknown", json_reply(404, {"error": {"message": f"no such path {path}"}})

    def _mapillary(self, route: str, params: dict[str, str], headers) -> tuple[str, Reply]:
        endpoint = "mapillary.images" if route == "images" else "mapillary.api"
        name = {"images": "mapillary.images", "image_ids": "mapillary.image_ids"}.get(
            route, "mapillary.entity")
        if not self.mapillary.authorised(params, headers):
            return name, mly.invalid_token()
        key = _fault_key("/mapillary/" + route, params)
        return name, self._fault_or(endpoint, key, lambda: self.mapillary.handle(route, params))

    def _fault_or(self, endpoint: str, key: str, answer) -> Reply:
        """``answer()``, or the injected fault's reply for this request instead."""
        fault = self.faults.decide(endpoint, key)
        if fault in (None, "slow", "truncated_jpeg", "non_image"):
            reply = answer()
        else:
            reply = self._fault_reply(endpoint, fault)
        if fault == "truncated_jpeg":
            reply.body = reply.body[: len(reply.body) // 3]
        elif fault == "non_image":
            reply.body = b"<html><body>Service temporarily unavailable</body></html>"
        reply.fault = fault
        return reply

    def _fault_reply(self, endpoint: str, fault: str) -> Reply:
        retry = {"Retry-After": str(self.faults.config.retry_after_s)}
        if fault == "drop_connection":
            return Reply(0, b"", drop=True)
        if endpoint == "streetview.metadata":
            status = "OVER_QUERY_LIMIT" if fault == "429" else "UNKNOWN_ERROR"
            return json_reply(200, {"error_message": "Demo fault injection.", "status": status})
        if fault == "429":
            if endpoint.startswith("mapillary"):
                return Reply(429, mly.rate_limited().body, headers=retry)
            return Reply(429, b"Too Many Requests", "text/plain", retry)
        if fault == "rate_limit_403":
            return mly.rate_limited()
        if fault == "query_timeout_400":
            return mly.query_timeout()
        if endpoint.startswith("mapillary"):
            return mly.server_error()
        return text_reply(503, "Service Unavailable")

    # --- images -----------------------------------------------------------------------------

    def thumbnail_url(self, image_id: str, size: str = "1024") -> str:
        """A freshly signed CDN link, as ``thumb_<size>_url`` would give it."""
        return self.url + self.signer.sign(f"/cdn/mly/{image_id}/{size}.jpg")

    def _thumbnail(self, path: str, params: dict[str, str]) -> Reply:
        verdict = self.signer.check(path, params.get("exp"), params.get("sig"))
        if verdict != "ok":
            text = "URL signature expired" if verdict == "expired" else "Bad URL hash"
            return text_reply(403, text)
        image_id, _, name = path[len("/cdn/mly/"):].partition("/")
        size = name.removesuffix(".jpg")
        im = self.world.image_index.get(image_id)
        if im is None or size not in mly.THUMB_SIZES:
            return text_reply(404, "Not Found")
        width, height = mly.image_size(im, size)
        return self._image_reply(path, (image_id, width, height), lambda: render_image(
            self.world, im, width, height))

    def _streetview_image(self, path: str, params: dict[str, str], raw_query: str) -> Reply:
        req = self.streetview.image_request(path, params, raw_query)
        if isinstance(req, Reply):
            return req
        if req.pano is None:
            if req.return_error_code:
                return text_reply(404, "Sorry, we have no imagery here.")
            return Reply(200, no_imagery_jpeg(req.width, req.height), JPEG)
        return self._image_reply(_fault_key(path, params), _sv_cache_key(req),
                                 lambda: render_image(self.world, req.pano, req.width,
                                                      req.height, req.heading,
                                                      pitch=req.pitch, fov=req.fov))

    def _image_reply(self, fault_key: str, cache_key: tuple, render) -> Reply:
        """A JPEG from the render cache, subject to the image faults."""
        return self._fault_or("image", fault_key, lambda: Reply(
            200, self.cache.get_or_render(cache_key, render), JPEG))


def _sv_cache_key(req: ImageRequest) -> tuple:
    return (req.pano.pano_id, req.width, req.height, round(req.heading, 1),
            round(req.pitch, 1), round(req.fov, 1))


def _fault_key(path: str, params: dict[str, str]) -> str:
    """The identity of a request for fault decisions: path and stable parameters."""
    stable = sorted((k, v) for k, v in params.items() if k not in VOLATILE_PARAMS)
    return path + "?" + "&".join(f"{k}={v}" for k, v in stable)


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 256
    stopping = False
    demo: DemoServer


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "geoscout-demo/1"
    disable_nagle_algorithm = True
    timeout = 60  # seconds an idle keep-alive connection is kept open

    def log_message(self, format, *args) -> None:
        pass

    def do_GET(self) -> None:
        if self.server.stopping:
            self._send(Reply(0, b"", drop=True))
            return
        demo: DemoServer = self.server.demo
        parts = urlsplit(self.path)
        try:
            endpoint, reply = demo.route(parts.path, parts.query, self.headers)
        except Exception as exc:  # noqa: BLE001 (a bug must not take the server down)
            endpoint = "error"
            reply = json_reply(500, {"error": {"message": f"internal error: {type(exc).__name__}",
                                               "type": "DemoServerError", "code": 1}})
        counts = {f"endpoint.{endpoint}": 1}
        if reply.fault:
            counts[f"fault.{reply.fault}"] = 1
        if not reply.drop:
            counts[f"status.{reply.status}"] = 1
            counts[f"bytes.{endpoint}"] = len(reply.body)
        demo.count(counts)
        if reply.fault == "slow":
            time.sleep(demo.faults.config.slow_seconds)
        if demo.latency_s > 0:
            time.sleep(demo.latency_s)
        self._send(reply)

    def _send(self, reply: Reply) -> None:
        if reply.drop:
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        head = [f"HTTP/1.1 {reply.status} {_reason(reply.status)}",
                f"Server: {self.server_version}", f"Date: {self.date_time_string()}",
                f"Content-Type: {reply.content_type}", f"Content-Length: {len(reply.body)}"]
        head += [f"{name}: {value}" for name, value in reply.headers.items()]
        self.log_request(reply.status)
        try:  # one write: headers and body in one segment, no Nagle / delayed-ACK stall
            self.wfile.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + reply.body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up (e.g. timed out on a slow reply)


# --- command line ---------------------------------------------------------------------------

def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="geoscout demo-server",
                                description="Serve the demo world's Mapillary and Street View "
                                            "API on this machine.")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8765, help="port (default 8765; 0: any free)")
    p.add_argument("--seed", type=int, default=0, help="world seed (default 0)")
    p.add_argument("--preset", default="demo", choices=["demo", "tiny"],
                   help="world size (default demo)")
    p.add_argument("--faults", default="", metavar="SPEC",
                   help="fault rates, e.g. 'rate_5xx=0.05,rate_429=0.02,seed=1' (default none)")
    p.add_argument("--token", default="demo-token",
                   help="Mapillary access token to accept (default demo-token)")
    p.add_argument("--key", default="demo-key",
                   help="Google API key to accept (default demo-key)")
    p.add_argument("--latency-ms", type=float, default=0.0,
                   help="milliseconds added to every reply, like a distant server (default 0)")
    p.add_argument("--signing-secret", default=None,
                   help="require Street View URL signatures with this url-safe base64 secret")
    return p


def _banner(server: DemoServer, seed: int) -> str:
    summary = server.world.summary(levels=())
    url = server.url
    counts = (f"{summary['mapillary_images']} Mapillary images, "
              f"{summary['streetview_panoramas']} Street View panoramas in "
              f"{len(summary['countries'])} countries, seed {seed}")
    return "\n".join([
        f"demo server: {url}  ({counts})",
        f"  Mapillary Graph API: {url}/mapillary   token: {server.mapillary.token}",
        f"  Street View API:     {url}{SV_PREFIX}   key: {server.streetview.key}",
        f"  coverage tiles:      {url}{TILE_PREFIX}{{z}}/{{x}}/{{y}}"])


def cli(argv: list[str]) -> int:
    """``geoscout demo-server``: serve until Ctrl-C or SIGTERM."""
    args = _parser().parse_args(argv)
    try:
        faults = FaultConfig.from_spec(args.faults) if args.faults else None
    except ValueError as exc:
        raise InputError(f"--faults: {exc}") from exc
    world = generate_world(args.seed, args.preset)
    server = DemoServer(world, host=args.host, port=args.port, faults=faults,
                        mapillary_token=args.token, google_key=args.key,
                        signing_secret=args.signing_secret, latency_s=args.latency_ms / 1000)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):  # also when started from a background shell,
        signal.signal(sig, lambda *_: stop.set())  # which leaves SIGINT ignored
    try:
        server.start()
        print(_banner(server, args.seed), flush=True)
        stop.wait()
        print("stopping", flush=True)
    finally:
        server.stop()
    return 0
