"""Google Street View Static API: free metadata lookups, pano de-duplication, signed images.

Listing a cell samples points in its land part (seeded), asks the free metadata endpoint for
the nearest outdoor panorama within ``radius_m``, keeps each pano id once (and only panos
whose location lies in the cell), and yields one candidate per configured heading.

Google's terms forbid storing or caching Street View images without a separate agreement.
:meth:`StreetViewSource.preflight` therefore refuses to run unless the user has set
``acknowledge_storage_terms=True`` and says how.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import random
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlencode, urlsplit

import numpy as np
import requests

from geo_assets.cells import cell_bounds, point_to_cell
from geo_assets.clients.base import Candidate, ListRequest
from geo_assets.clients.http import HttpClient, Verdict, url_host
from geo_assets.clients.records import (
    SOURCE_ID_RE,
    RecordError,
    coordinate,
    optional_text,
    record_digest,
    rejected,
    source_id,
)
from geo_assets.clients.redact import Redactor
from geo_assets.errors import InputError
from geo_assets.manifest import Source
from geo_assets.settings import StreetViewSettings

KEY_HELP = "set GOOGLE_MAPS_API_KEY to a key with the Street View Static API enabled"
TERMS_HELP = (
    "Google's Street View terms forbid storing Street View images without a separate "
    "agreement with Google. If you have one, acknowledge it explicitly: "
    "StreetViewSource(..., acknowledge_storage_terms=True) (Dagster: set "
    "store_images_acknowledged: true on the streetview resource; production: "
    "GEOSCOUT_STREETVIEW_ACKNOWLEDGED=1)."
)
LICENSE = "Google Street View (storage needs an agreement with Google)"
TRANSIENT = {"OVER_QUERY_LIMIT", "UNKNOWN_ERROR"}
NO_IMAGERY = {"ZERO_RESULTS", "NOT_FOUND"}


def sign_url(path_and_query: str, secret: str) -> str:
    """Google URL signature: url-safe base64 of HMAC-SHA1(path?query) under the decoded secret."""
    key = base64.urlsafe_b64decode(secret + "=" * (-len(secret) % 4))
    digest = hmac.new(key, path_and_query.encode(), hashlib.sha1).digest()
    return base64.urlsafe_b64encode(digest).decode()


def classify_metadata(response: requests.Response) -> Verdict:
    if response.status_code >= 500:
        return "transient", f"Street View server error (HTTP {response.status_code})"
    if response.status_code == 429:
        return "quota", "Street View rate limit (HTTP 429)"
    try:
        status = response.json().get("status", "")
    except (ValueError, AttributeError):
        return "transient", "Street View metadata is not JSON"
    if status == "REQUEST_DENIED" or response.status_code in (401, 403):
        return "credential", f"Street View denied the request (REQUEST_DENIED): {KEY_HELP}"
    if status in TRANSIENT:
        return ("quota" if status == "OVER_QUERY_LIMIT" else "transient"), f"Street View {status}"
    if status == "INVALID_REQUEST" or response.status_code >= 400:
        return "fatal", f"Street View rejected the request ({status or response.status_code})"
    return "ok", ""


def classify_image(response: requests.Response) -> Verdict:
    status = response.status_code
    if status < 400:
        return "ok", ""
    if status in (401, 403):
        return "credential", f"Street View denied the image request (HTTP {status}): {KEY_HELP}"
    if status == 404:
        return "not_found", "Street View has no image for this pano (HTTP 404)"
    if status == 429:
        return "quota", "Street View rate limit (HTTP 429)"
    if status >= 500:
        return "transient", f"Street View server error (HTTP {status})"
    return "fatal", f"Street View rejected the image request (HTTP {status})"


class StreetViewClient:
    """Metadata lookups and image downloads, with the key (and signature) in the query."""

    def __init__(self, key: str | None, signing_secret: str | None = None,
                 base_url: str = "https://maps.googleapis.com",
                 settings: StreetViewSettings | None = None, *, seed: int | None = None) -> None:
        self.key = key or ""
        self.signing_secret = signing_secret or None
        self.base_url = base_url.rstrip("/")
        self.settings = settings or StreetViewSettings()
        self.redactor = Redactor()
        self.redactor.add(self.key, self.signing_secret)
        hosts = (url_host(self.base_url),)
        self.meta_http = HttpClient("streetview", self.settings.http, redactor=self.redactor,
                                    classify=classify_metadata, seed=seed, allowed_hosts=hosts)
        self.image_http = HttpClient("streetview", self.settings.http, redactor=self.redactor,
                                     classify=classify_image, seed=seed, allowed_hosts=hosts)
        self.budget = None  # a geo_assets.request_budget.RequestBudget, set by the caller

    def close(self) -> None:
        self.meta_http.close()
        self.image_http.close()

    def url(self, endpoint: str, params: dict) -> str:
        """Full URL with key and, when a secret is set, signature (never log this)."""
        path = urlsplit(self.base_url).path + f"/maps/api/streetview{endpoint}"
        query = urlencode({**params, "key": self.key})
        signed = f"{path}?{query}"
        if self.signing_secret:
            signed += f"&signature={sign_url(signed, self.signing_secret)}"
        origin = self.base_url[: len(self.base_url) - len(urlsplit(self.base_url).path)]
        return origin + signed

    def metadata(self, lat: float, lon: float, radius_m: float | None = None) -> dict:
        s = self.settings
        radius = round(radius_m if radius_m is not None else s.radius_m)
        params = {"location": f"{lat:.7f},{lon:.7f}", "radius": radius, "source": s.source}
        if self.budget is not None:
            self.budget.take("search")
        return self.meta_http.get_json(self.url("/metadata", params),
                                       what=f"metadata near {lat:.5f},{lon:.5f}")

    def image(self, pano_id: str, heading: float) -> bytes:
        s = self.settings
        params = {"pano": pano_id, "size": f"{s.size[0]}x{s.size[1]}", "heading": f"{heading:g}",
                  "pitch": f"{s.pitch:g}", "fov": f"{s.fov:g}", "return_error_code": "true"}
        if self.budget is not None:
            self.budget.take("cdn")
        return self.image_http.get_bytes(self.url("", params),
                                         what=f"image {pano_id} heading {heading:g}")


def sample_points(cell_id: str, land, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` (lat, lon) points uniform on the sphere within the cell, inside ``land`` if given."""
    min_lon, min_lat, max_lon, max_lat = cell_bounds(cell_id)
    out = np.empty((0, 2))
    for _ in range(50):
        if len(out) >= n:
            break
        k = max(64, 2 * (n - len(out)))
        z = rng.uniform(np.sin(np.radians(min_lat)), np.sin(np.radians(max_lat)), k)
        pts = np.stack([np.degrees(np.arcsin(z)), rng.uniform(min_lon, max_lon, k)], axis=1)
        if land is not None:
            import shapely

            pts = pts[shapely.contains_xy(land, pts[:, 1], pts[:, 0])]
        out = np.vstack([out, pts])
    return out[:n]


def covering_radius_m(cell_id: str, n_points: int) -> float:
    """A search radius at which ``n_points`` spread over the cell cover all of it."""
    min_lon, min_lat, max_lon, max_lat = cell_bounds(cell_id)
    mid = np.radians((min_lat + max_lat) / 2)
    area = (max_lat - min_lat) * 111_195.0 * (max_lon - min_lon) * 111_195.0 * np.cos(mid)
    return float(np.sqrt(area / n_points / np.pi) * 1.5)


def ring_points(location: dict, distance_m: float, n: int) -> np.ndarray:
    """``n`` (lat, lon) points on a circle of ``distance_m`` around a pano location."""
    lat, lon = float(location["lat"]), float(location["lng"])
    angles = np.linspace(0, 2 * np.pi, n, endpoint=False)
    dlat = distance_m / 111_195.0 * np.cos(angles)
    dlon = distance_m / (111_195.0 * max(np.cos(np.radians(lat)), 1e-6)) * np.sin(angles)
    return np.stack([np.clip(lat + dlat, -90, 90), (lon + dlon + 180) % 360 - 180], axis=1)


def parse_metadata(meta: dict) -> dict:
    """An "OK" metadata answer -> pano_id, location {lat, lng}, date (epoch ms), copyright;
    raises :class:`RecordError` naming the bad field."""
    loc = meta.get("location")
    if not isinstance(loc, dict):
        raise RecordError(f"location is {type(loc).__name__}, not an object", location=True)
    date = optional_text(meta.get("date"), "date")
    return {"pano_id": source_id(meta.get("pano_id"), "pano_id"),
            "location": {"lat": coordinate(loc.get("lat"), "location.lat", 90),
                         "lng": coordinate(loc.get("lng"), "location.lng", 180)},
            "date": parse_date(date),
            "copyright": optional_text(meta.get("copyright"), "copyright")}


def parse_date(date: str | None) -> int | None:
    """Street View "YYYY-MM" (or "YYYY") -> epoch ms at the start of that month, UTC."""
    if not date:
        return None
    try:
        parts = [int(p) for p in date.split("-")[:2]]
        when = dt.datetime(parts[0], parts[1] if len(parts) > 1 else 1, 1, tzinfo=dt.UTC)
    except (ValueError, IndexError, OverflowError):
        return None
    return int(when.timestamp() * 1000)


class StreetViewSource:
    """The Street View image source for the per-cell pipeline."""

    name = str(Source.STREETVIEW)
    ext = "jpg"

    def __init__(self, client: StreetViewClient, *, acknowledge_storage_terms: bool = False):
        self.client = client
        self.acknowledge_storage_terms = acknowledge_storage_terms
        self.last_listing: dict = {}
        self.rejected: dict[str, Candidate] = {}

    def http_counters(self) -> dict[str, int]:
        return dict(self.client.meta_http.counters + self.client.image_http.counters)

    def preflight(self) -> None:
        if not self.acknowledge_storage_terms:
            raise InputError(f"refusing to store Street View images. {TERMS_HELP}")
        if not self.client.key:
            raise InputError(f"no Google Maps API key: {KEY_HELP}")

    def fetch(self, candidate: Candidate) -> bytes:
        self.preflight()
        pano_id, heading = candidate.fetch_ref
        return self.client.image(pano_id, heading)

    def list_candidates(self, request: ListRequest) -> list[Candidate]:
        """Discovery lookups at stratified points whose search circles cover the cell's land,
        then lookups in rings around each pano found (coverage runs along roads), until the
        target or the lookup budget is reached. Deterministic for a seed."""
        s = self.client.settings
        panos_wanted = -(-request.target // max(1, len(s.headings)))
        rng = np.random.default_rng(random.Random(f"{request.seed}:{request.cell_id}")
                                    .getrandbits(64))
        n_discovery = max(1, s.max_lookups // 4)
        radius = max(s.radius_m, covering_radius_m(request.cell_id, n_discovery))
        panos: dict[str, dict] = {}
        self.rejected = {}
        budget = [s.max_lookups]
        while budget[0] > 0 and len(panos) < panos_wanted:
            before = set(panos)
            points = sample_points(request.cell_id, request.land, n_discovery, rng)
            self._lookup_round(points, radius, request.cell_id, panos, panos_wanted, budget)
            frontier = [panos[k] for k in panos if k not in before]
            while frontier and len(panos) < panos_wanted and budget[0] > 0:
                ring = np.vstack([ring_points(p["location"], s.ring_m, s.ring_points)
                                  for p in frontier])
                seen = set(panos)
                self._lookup_round(ring, s.radius_m, request.cell_id, panos, panos_wanted,
                                   budget)
                frontier = [panos[k] for k in panos if k not in seen]
            if set(panos) == before:
                break  # a whole round found nothing new
        self.last_listing = {"coverage": "sampled", "lookups": s.max_lookups - budget[0],
                             "panos": len(panos), "discovery_radius_m": round(radius)}
        cands = [c for p in panos.values() for c in self._candidates(p, s.headings)]
        self.last_listing["records_rejected"] = len(self.rejected)
        return sorted([*cands, *self.rejected.values()], key=lambda c: c.image_id)

    def _lookup_round(self, points: np.ndarray, radius: float, cell_id: str, panos: dict,
                      wanted: int, budget: list[int]) -> None:
        """Look up ``points`` (in parallel, results taken in point order) into ``panos``."""
        points = points[: max(0, budget[0])]
        workers = max(1, self.client.settings.lookup_workers)
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for start in range(0, len(points), workers * 2):
                if len(panos) >= wanted:
                    return
                batch = points[start:start + workers * 2]
                budget[0] -= len(batch)
                metas = pool.map(lambda p: self.client.metadata(float(p[0]), float(p[1]),
                                                                radius), batch)
                for meta in metas:
                    pano = self._pano_in_cell(meta, cell_id)
                    if pano is not None and len(panos) < wanted:
                        panos.setdefault(pano["pano_id"], pano)

    def _pano_in_cell(self, meta: object, cell_id: str) -> dict | None:
        """The strictly parsed pano of a metadata answer when it lies in the cell; a malformed
        answer is recorded in ``self.rejected`` (a manifest row with its reason)."""
        if not isinstance(meta, dict) or meta.get("status") != "OK":
            return None
        try:
            pano = parse_metadata(meta)
        except RecordError as exc:
            raw = meta.get("pano_id")
            sid = raw if isinstance(raw, str) and SOURCE_ID_RE.match(raw) else (
                f"invalid-{record_digest(meta)}")
            c = rejected(str(Source.STREETVIEW), sid, f"street view pano {sid}: {exc}",
                         location=exc.location)
            self.rejected.setdefault(c.image_id, c)
            return None
        loc = pano["location"]
        if point_to_cell(loc["lat"], loc["lng"], len(cell_id)) != cell_id:
            return None
        return pano

    @staticmethod
    def _candidates(meta: dict, headings) -> list[Candidate]:
        pano_id = meta["pano_id"]
        loc = meta["location"]
        copyright_ = str(meta.get("copyright") or "© Google")
        date = meta.get("date")
        return [Candidate(
            image_id=f"{Source.STREETVIEW}:{pano_id}_{h:g}", source=str(Source.STREETVIEW),
            source_id=f"{pano_id}_{h:g}", lat_deg=float(loc["lat"]), lon_deg=float(loc["lng"]),
            group_id=pano_id, creator=copyright_.replace("©", "").strip() or None,
            captured_at_ms=date if isinstance(date, int) else parse_date(date), heading_deg=float(h), is_pano=False,
            license=LICENSE, attribution=copyright_, fetch_ref=(pano_id, float(h)),
        ) for h in headings]
