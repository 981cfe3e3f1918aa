"""Mapillary Graph API v4: coverage discovery, spread-out bbox sampling, thumbnail download.

How a cell is listed (:meth:`MapillarySource.list_candidates`):

1. Coverage: the ``mly1_public`` vector tiles at a zoom chosen from the cell size tell where
   imagery exists (``sequence`` lines, or ``image`` points at zoom 14). The cell is cut into
   search boxes with sides under the API's limit (0.01 degrees) and only boxes with coverage
   are searched. If the tiles cannot be read, boxes are drawn stratified at random over the
   cell (over its land part when given) under a request budget.
2. Spread: boxes are visited round-robin over strata of the cell in a seeded order, and each
   box contributes an even share of the per-cell target; leftovers fill the target after.
3. Search: ``GET /images?bbox=...&fields=...&limit=2000``; a box that returns the cap is split
   in four and searched again.
4. Thumbnails are fetched right after listing; the signed URLs stay in memory only. An
   expired link (403/404/410 from the CDN) is refreshed once through ``GET /{id}``.

The token travels in the ``Authorization: OAuth`` header to the Graph API and, as Mapillary's
own SDK sends it, as the ``access_token`` query parameter to ``tiles.mapillary.com`` (the
"preferred method for interacting with vector tiles"); the redactor removes it from every
message, and no URL is stored.
"""

from __future__ import annotations

import math
import random
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import quote

import numpy as np
import requests

from geo_assets.cells import cell_bounds
from geo_assets.clients.base import Candidate, ListRequest
from geo_assets.clients.http import (
    CredentialError,
    HttpClient,
    NotFoundError,
    RemoteServiceError,
    TransientServiceError,
    Verdict,
    url_host,
)
from geo_assets.clients.mapillary_records import LICENSE, parse_image
from geo_assets.clients.redact import PROCESS_REDACTOR, Redactor
from geo_assets.clients.vector_tiles import decode_tile, tiles_covering
from geo_assets.errors import InputError
from geo_assets.manifest import Source
from geo_assets.settings import MapillarySettings

BASE_FIELDS = ("id", "computed_geometry", "geometry", "captured_at", "compass_angle",
               "computed_compass_angle", "sequence", "creator", "is_pano")
__all__ = ["LICENSE", "MapillaryClient", "MapillarySource", "parse_image"]  # + helpers below
SEARCH_CAP = 2000
# hosts of Mapillary's signed thumbnail links; anything else in an entity is refused
CDN_HOSTS = ("*.fbcdn.net", "*.mapillary.com")
TILE_SLACK_PX = 4  # coverage vertices are rounded to the tile grid: search this far around
QUERY_TIMEOUT_SUBCODE = 3404014
INVALID_TOKEN_CODE = 190
RATE_LIMIT_CODES = {4, 17, 32, 613}
TOKEN_HELP = ("set MAPILLARY_TOKEN to a client access token from "
              "https://www.mapillary.com/dashboard/developers")


def _error_body(response: requests.Response) -> dict:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body.get("error", {}) if isinstance(body, dict) else {}


def classify_graph(response: requests.Response) -> Verdict:
    """Map a Graph API response to ok / transient / quota / credential / fatal."""
    status = response.status_code
    if status < 400:
        return "ok", ""
    err = _error_body(response)
    code, subcode = err.get("code"), err.get("error_subcode")
    message = PROCESS_REDACTOR(err.get("message", ""))[:200]  # redact before cutting
    if code == INVALID_TOKEN_CODE or status == 401:
        return "credential", f"Mapillary rejected the access token (code 190): {TOKEN_HELP}"
    if status == 429 or code in RATE_LIMIT_CODES:
        return "quota", f"Mapillary rate limit (HTTP {status}, code {code}): {message}"
    if subcode == QUERY_TIMEOUT_SUBCODE or "query timeout" in message.lower():
        return "transient", "Mapillary query timeout (HTTP 400, subcode 3404014)"
    if status >= 500 or err.get("is_transient"):
        return "transient", f"Mapillary server error (HTTP {status})"
    if status == 403:
        return "credential", f"Mapillary denied access (HTTP 403, code {code}): {TOKEN_HELP}"
    if status == 404:
        return "not_found", "Mapillary: not found (HTTP 404)"
    return "fatal", f"Mapillary rejected the request (HTTP {status}, code {code}): {message}"


def classify_cdn(response: requests.Response) -> Verdict:
    status = response.status_code
    if status < 400:
        return "ok", ""
    if status in (403, 404, 410):
        return "not_found", f"thumbnail link refused or expired (HTTP {status})"
    if status == 429:
        return "quota", "CDN rate limit (HTTP 429)"
    if status >= 500 or status == 408:
        return "transient", f"CDN error (HTTP {status})"
    return "fatal", f"CDN rejected the request (HTTP {status})"


class MapillaryClient:
    """Low-level Graph API and coverage-tile calls."""

    def __init__(self, token: str | None, graph_url: str = "https://graph.mapillary.com",
                 tiles_url: str = "https://tiles.mapillary.com",
                 settings: MapillarySettings | None = None, *, seed: int | None = None) -> None:
        self.token = token or ""
        self.graph_url = graph_url.rstrip("/")
        self.tiles_url = tiles_url.rstrip("/")
        self.settings = settings or MapillarySettings()
        self.redactor = Redactor()
        self.redactor.add(self.token)
        auth = {"Authorization": f"OAuth {self.token}"}
        api_hosts = (url_host(self.graph_url), url_host(self.tiles_url))
        self.api = HttpClient("mapillary", self.settings.http, redactor=self.redactor,
                              headers=auth, classify=classify_graph, seed=seed,
                              allowed_hosts=api_hosts)
        self.cdn = HttpClient("mapillary-cdn", self.settings.http, redactor=self.redactor,
                              classify=classify_cdn, seed=seed,
                              allowed_hosts=(*CDN_HOSTS, *api_hosts))
        self.tiles = HttpClient("mapillary-tiles", self.settings.http, redactor=self.redactor,
                                classify=classify_graph, seed=seed, allowed_hosts=api_hosts)
        self.budget = None  # a geo_assets.request_budget.RequestBudget, set by the caller

    def _take(self, endpoint_class: str) -> None:
        if self.budget is not None:
            self.budget.take(endpoint_class)

    def close(self) -> None:
        self.api.close()
        self.cdn.close()
        self.tiles.close()

    def fields(self) -> str:
        return ",".join([*BASE_FIELDS, self.settings.thumb_field()])

    def search(self, bbox: tuple[float, float, float, float], limit: int = SEARCH_CAP) -> list:
        box = ",".join(f"{v:.7f}" for v in bbox)
        params = {"bbox": box, "fields": self.fields(), "limit": str(limit)}
        self._take("search")
        body = self.api.get_json(f"{self.graph_url}/images", params=params,
                                 what=f"image search bbox={box}")
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, list):
            raise TransientServiceError("mapillary: image search answered without a data list")
        return data

    def image(self, image_id: str, fields: str | None = None) -> dict:
        self._take("entity")
        return self.api.get_json(f"{self.graph_url}/{quote(str(image_id), safe='')}",
                                 params={"fields": fields or self.fields()},
                                 what=f"image {image_id}")

    def coverage_tile(self, z: int, x: int, y: int) -> bytes | None:
        url = f"{self.tiles_url}/maps/vtp/mly1_public/2/{z}/{x}/{y}"
        self._take("tiles")
        try:
            return self.tiles.request("GET", url, params={"access_token": self.token},
                                      what=f"coverage tile {z}/{x}/{y}").content
        except NotFoundError:
            return None

    def thumbnail(self, candidate: Candidate) -> bytes:
        """Download a thumbnail; refresh an expired signed link once."""
        url = candidate.fetch_ref
        what = f"thumbnail of {candidate.image_id}"
        if url:
            try:
                self._take("cdn")
                return self.cdn.get_bytes(url, what=what)
            except NotFoundError:
                pass
        fresh = self.image(candidate.source_id, fields=self.settings.thumb_field())
        url = fresh.get(self.settings.thumb_field()) if isinstance(fresh, dict) else None
        if not url or not isinstance(url, str):
            raise RemoteServiceError(f"mapillary: {candidate.image_id} has no thumbnail link")
        self._take("cdn")
        return self.cdn.get_bytes(url, what=what)


@dataclass(frozen=True)
class BoxGrid:
    """The cell cut into ``nx`` x ``ny`` search boxes with sides of at most ``side`` degrees.
    Boxes are addressed by index ``ix * ny + iy`` and never all built at once (a level-5
    cell holds 650,000 of them)."""

    bbox: tuple[float, float, float, float]
    nx: int
    ny: int

    @classmethod
    def over(cls, bbox, side: float) -> BoxGrid:
        min_lon, min_lat, max_lon, max_lat = bbox
        nx = max(1, math.ceil((max_lon - min_lon) / side - 1e-9))
        ny = max(1, math.ceil((max_lat - min_lat) / side - 1e-9))
        return cls(tuple(float(v) for v in bbox), nx, ny)

    @property
    def size(self) -> int:
        return self.nx * self.ny

    def boxes(self, idx) -> np.ndarray:
        """(N, 4) min_lon, min_lat, max_lon, max_lat of the boxes ``idx``."""
        ix, iy = np.divmod(np.asarray(idx, dtype=np.int64), self.ny)
        x0, y0, x1, y1 = self.bbox
        dx, dy = (x1 - x0) / self.nx, (y1 - y0) / self.ny
        return np.stack([x0 + ix * dx, y0 + iy * dy,
                         np.where(ix + 1 == self.nx, x1, x0 + (ix + 1) * dx),
                         np.where(iy + 1 == self.ny, y1, y0 + (iy + 1) * dy)], axis=-1)

    def index_of(self, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
        """Box index of points inside the bbox (points outside are left out)."""
        x0, y0, x1, y1 = self.bbox
        inside = (lon >= x0) & (lon < x1) & (lat >= y0) & (lat < y1)
        ix = np.clip(((lon[inside] - x0) / (x1 - x0) * self.nx).astype(np.int64), 0, self.nx - 1)
        iy = np.clip(((lat[inside] - y0) / (y1 - y0) * self.ny).astype(np.int64), 0, self.ny - 1)
        return ix * self.ny + iy

    def near(self, points: np.ndarray, margin: float) -> np.ndarray:
        """Sorted indices of the boxes within ``margin`` degrees of any (lon, lat) point."""
        found = [self.index_of(points[:, 0] + dx, points[:, 1] + dy)
                 for dx in (-margin, 0.0, margin) for dy in (-margin, 0.0, margin)]
        return np.unique(np.concatenate(found)) if found else np.zeros(0, dtype=np.int64)

    def stratified_sample(self, n: int, strata: int, rng: random.Random) -> np.ndarray:
        """About ``n`` distinct box indices, the same number from each of strata x strata
        blocks of the grid."""
        per = max(1, math.ceil(n / strata**2))
        xs = np.linspace(0, self.nx, strata + 1).astype(int)
        ys = np.linspace(0, self.ny, strata + 1).astype(int)
        out = set()
        for a in range(strata):
            for b in range(strata):
                if xs[a + 1] > xs[a] and ys[b + 1] > ys[b]:
                    for _ in range(per):
                        ix = rng.randrange(xs[a], xs[a + 1])
                        out.add(ix * self.ny + rng.randrange(ys[b], ys[b + 1]))
        return np.array(sorted(out), dtype=np.int64)


def search_boxes(bbox, side: float) -> np.ndarray:
    """Every search box of ``bbox`` as an (N, 4) array (small areas only)."""
    grid = BoxGrid.over(bbox, side)
    return grid.boxes(np.arange(grid.size))


def spread_order(boxes: np.ndarray, bbox, strata: int, rng: random.Random) -> list[int]:
    """Box indices interleaved round-robin over ``strata`` x ``strata`` blocks of ``bbox``,
    shuffled within each block: any prefix of the order is spread over the cell."""
    min_lon, min_lat, max_lon, max_lat = bbox
    cx = (boxes[:, 0] + boxes[:, 2]) / 2
    cy = (boxes[:, 1] + boxes[:, 3]) / 2
    sx = np.clip(((cx - min_lon) / (max_lon - min_lon) * strata).astype(int), 0, strata - 1)
    sy = np.clip(((cy - min_lat) / (max_lat - min_lat) * strata).astype(int), 0, strata - 1)
    blocks: dict[int, list[int]] = {}
    for i, key in enumerate(sx * strata + sy):
        blocks.setdefault(int(key), []).append(i)
    queues = [blocks[k] for k in sorted(blocks)]
    for q in queues:
        rng.shuffle(q)
    rng.shuffle(queues)
    order: list[int] = []
    depth = 0
    while len(order) < len(boxes):
        order.extend(q[depth] for q in queues if depth < len(q))
        depth += 1
    return order


def densify(lonlat: np.ndarray, step: float) -> np.ndarray:
    """Vertices of a line plus points every ``step`` degrees along each segment."""
    if len(lonlat) < 2:
        return lonlat
    a, b = lonlat[:-1], lonlat[1:]
    n = np.maximum(1, np.ceil(np.abs(b - a).max(axis=1) / step)).astype(int)
    t = np.concatenate([np.arange(k) / k for k in n])
    seg = np.repeat(np.arange(len(n)), n)
    pts = a[seg] + (b[seg] - a[seg]) * t[:, None]
    return np.vstack([pts, lonlat[-1:]])


def auto_zoom(bbox) -> int:
    """Coverage zoom whose tiles are about half the cell's width (6..14)."""
    width = bbox[2] - bbox[0]
    return int(min(14, max(6, round(math.log2(360.0 / width)) + 1)))


class MapillarySource:
    """The Mapillary image source for the per-cell pipeline."""

    name = str(Source.MAPILLARY)
    ext = "jpg"

    def __init__(self, client: MapillaryClient) -> None:
        self.client = client
        self.settings = client.settings
        self.last_listing: dict = {}
        self.rejected: dict[str, Candidate] = {}
        self._margin = 0.0
        self._budget_lock = threading.Lock()

    def http_counters(self) -> dict[str, int]:
        c = self.client
        return dict(c.api.counters + c.cdn.counters + c.tiles.counters)

    def preflight(self) -> None:
        if not self.client.token:
            raise InputError(f"no Mapillary access token: {TOKEN_HELP}")

    def fetch(self, candidate: Candidate) -> bytes:
        return self.client.thumbnail(candidate)

    # --- coverage ----------------------------------------------------------------------------

    def coverage_points(self, bbox) -> np.ndarray | None:
        """Lon/lat points where imagery exists in ``bbox``; None when the tiles are unusable."""
        zoom = self.settings.coverage_zoom or auto_zoom(bbox)
        tiles = tiles_covering(bbox, zoom)
        while len(tiles) > 256 and zoom > 0:
            zoom -= 1
            tiles = tiles_covering(bbox, zoom)
        self._margin = TILE_SLACK_PX * 360.0 / 2**zoom / 4096  # tile-grid rounding
        parts = [np.empty((0, 2))]
        try:
            with ThreadPoolExecutor(max_workers=max(1, self.settings.list_workers)) as pool:
                bodies = list(pool.map(lambda t: self.client.coverage_tile(zoom, *t), tiles))
            for (x, y), data in zip(tiles, bodies):
                if data:
                    parts.extend(self._tile_points(data, zoom, x, y))
        except (TransientServiceError, CredentialError, InputError):
            raise
        except (RemoteServiceError, ValueError, IndexError, UnicodeDecodeError):
            return None  # tiles refused or unreadable: fall back to sampled boxes
        except Exception:  # noqa: BLE001 - tile bytes are untrusted; any decoder failure
            return None    # (AssertionError, struct or zlib errors) means: sample boxes
        return np.vstack(parts)

    def _tile_points(self, data: bytes, z: int, x: int, y: int) -> list[np.ndarray]:
        layers = decode_tile(data, z, x, y)
        out = []
        for name in ("image", "sequence", "overview"):
            for feature in layers.get(name, []):
                pts = feature.lonlat
                out.append(densify(pts, self.settings.box_deg / 2) if feature.geom_type == 2
                           else pts)
        return out

    def _boxes_to_search(self, request: ListRequest, grid: BoxGrid,
                         rng: random.Random) -> np.ndarray:
        """Indices of boxes worth searching; how they were found goes into last_listing."""
        points = self.coverage_points(grid.bbox) if self.settings.use_coverage_tiles else None
        if points is not None:
            self.last_listing["coverage"] = "tiles"
            return grid.near(points, self._margin)
        self.last_listing["coverage"] = "sampled"
        idx = grid.stratified_sample(4 * self.settings.max_search_requests,
                                     self.settings.strata, rng)
        if request.land is not None:
            import shapely

            b = grid.boxes(idx)
            idx = idx[shapely.intersects(shapely.box(b[:, 0], b[:, 1], b[:, 2], b[:, 3]),
                                         request.land)]
        return idx

    # --- listing -----------------------------------------------------------------------------

    def _search(self, box, depth: int, budget: list[int]) -> list[dict]:
        with self._budget_lock:
            budget[0] -= 1
        data = self.client.search(tuple(float(v) for v in box))
        if len(data) < SEARCH_CAP or depth >= self.settings.max_split_depth:
            return data
        x0, y0, x1, y1 = box
        xm, ym = (x0 + x1) / 2, (y0 + y1) / 2
        out: list[dict] = []
        for sub in ((x0, y0, xm, ym), (xm, y0, x1, ym), (x0, ym, xm, y1), (xm, ym, x1, y1)):
            out.extend(self._search(sub, depth + 1, budget))
        return out

    def list_candidates(self, request: ListRequest) -> list[Candidate]:
        grid = BoxGrid.over(cell_bounds(request.cell_id), self.settings.box_deg)
        rng = random.Random(f"{request.seed}:{request.cell_id}")
        self.last_listing = {"boxes_total": grid.size}
        self.rejected: dict[str, Candidate] = {}
        idx = self._boxes_to_search(request, grid, rng)
        boxes = grid.boxes(idx)
        order = spread_order(boxes, grid.bbox, self.settings.strata, rng)
        budget = [self.settings.max_search_requests]
        visits = max(1, min(len(order), budget[0]))
        share = max(1, math.ceil(request.target / visits))
        chosen: dict[str, Candidate] = {}
        leftovers: list[list[Candidate]] = []
        searched = 0
        batch = max(1, self.settings.list_workers)
        with ThreadPoolExecutor(max_workers=batch) as pool:
            for start in range(0, len(order), batch):
                if budget[0] <= 0 or len(chosen) >= request.target:
                    break
                # search a batch in parallel, then take results in the spread order
                boxes_now = order[start:start + min(batch, budget[0])]
                results = list(pool.map(lambda b: self._search(boxes[b], 0, budget), boxes_now))
                for found_raw in results:
                    if len(chosen) >= request.target:
                        break
                    searched += 1
                    found = self._parse(found_raw, chosen, rng)
                    chosen.update((c.image_id, c) for c in found[:share])
                    leftovers.append(found[share:])
        self._fill(chosen, leftovers, request.target)
        self.last_listing.update(boxes_with_coverage=len(idx), boxes_searched=searched,
                                 records_rejected=len(self.rejected))
        rejects = [c for k, c in self.rejected.items() if k not in chosen]
        return sorted([*chosen.values(), *rejects], key=lambda c: c.image_id)

    def _parse(self, entities: list, chosen: dict, rng: random.Random) -> list[Candidate]:
        thumb = self.settings.thumb_field()
        found = {}
        for entity in entities:
            c = parse_image(entity, thumb)
            if c.drop_reason is not None:
                self.rejected.setdefault(c.image_id, c)  # recorded, never fetched
            elif c.image_id not in chosen:
                found[c.image_id] = c
        out = [found[k] for k in sorted(found)]
        rng.shuffle(out)
        return out

    @staticmethod
    def _fill(chosen: dict, leftovers: list[list[Candidate]], target: int) -> None:
        depth = 0
        while len(chosen) < target and any(depth < len(q) for q in leftovers):
            for q in leftovers:
                if depth < len(q) and len(chosen) < target:
                    chosen.setdefault(q[depth].image_id, q[depth])
            depth += 1
