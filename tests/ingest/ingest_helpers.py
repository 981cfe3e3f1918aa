"""Helpers for the ingestion tests: a scripted loopback HTTP server and image factories."""

from __future__ import annotations

import io
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from PIL import Image


class Scripted:
    """A loopback server that answers each request with the next scripted reply.

    A reply is ``(status, body, headers)``; ``"drop"`` closes the connection without an
    answer; ``("sleep", seconds, reply)`` waits first. The last reply repeats.
    """

    def __init__(self, replies: list) -> None:
        self.replies = list(replies)
        self.requests: list[dict] = []
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                with outer._lock:
                    outer.requests.append({"path": self.path, "headers": dict(self.headers)})
                    n = len(outer.requests) - 1
                    reply = outer.replies[min(n, len(outer.replies) - 1)]
                if isinstance(reply, tuple) and reply[0] == "sleep":
                    time.sleep(reply[1])
                    reply = reply[2]
                if reply == "drop":
                    self.close_connection = True
                    self.connection.close()
                    return
                status, body, headers = reply
                if isinstance(body, (dict, list)):
                    body = json.dumps(body).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", str(len(body)))
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def jpeg_bytes(width: int = 128, height: int = 96, colour=(120, 130, 140), exif=None,
               quality: int = 90) -> bytes:
    img = Image.new("RGB", (width, height), colour)
    for x in range(0, width, 8):  # some structure so the perceptual hash is not flat
        img.paste((colour[0] // 2, colour[1], 255 - colour[2]), (x, 0, x + 4, height // 2))
    buf = io.BytesIO()
    kwargs = {"exif": exif} if exif is not None else {}
    img.save(buf, "JPEG", quality=quality, **kwargs)
    return buf.getvalue()


def demo_mapillary_source(server, token: str = "demo-token", **http):
    from geo_assets.clients.mapillary import MapillaryClient, MapillarySource
    from geo_assets.settings import HttpSettings, MapillarySettings, RetryPolicy

    retry = RetryPolicy(max_retries=8, backoff_base_s=0.02, backoff_max_s=0.2)
    settings = MapillarySettings(http=HttpSettings(requests_per_s=0, retry=retry,
                                                   read_timeout_s=5.0, **http))
    client = MapillaryClient(token, graph_url=server.url + "/mapillary",
                             tiles_url=server.url + "/mapillary-tiles", settings=settings,
                             seed=0)
    return MapillarySource(client)


class CountingSource:
    """Wraps a source and counts, per image id, the fetches that returned a valid image."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.name, self.ext = inner.name, inner.ext
        self.valid: dict[str, int] = {}
        self._lock = threading.Lock()

    def __getattr__(self, item):
        return getattr(self.inner, item)

    def preflight(self) -> None:
        self.inner.preflight()

    def list_candidates(self, request):
        return self.inner.list_candidates(request)

    def fetch(self, candidate) -> bytes:
        from geo_assets.images import inspect_image

        data = self.inner.fetch(candidate)
        if inspect_image(data).ok:
            with self._lock:
                self.valid[candidate.image_id] = self.valid.get(candidate.image_id, 0) + 1
        return data


def busiest_cells(world, level: int, n: int) -> list[str]:
    from collections import Counter

    import numpy as np

    from geo_assets.cells import points_to_cells

    lat, lon = world.image_lat_lon
    counts = Counter(points_to_cells(np.asarray(lat), np.asarray(lon), level))
    return [c for c, _ in counts.most_common(n)]
