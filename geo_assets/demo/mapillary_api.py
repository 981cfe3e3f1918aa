"""Request handlers of the demo Mapillary Graph API v4 (``{base}/mapillary/...``).

Routes: ``images`` (search by ``bbox``, ``sequence_id`` or ``image_ids``; filters
``is_pano``, ``creator_username``), ``image_ids?sequence_id=``, ``{image_id}``.
Responses and errors have the shape of the real API's (see the recorded fixtures): only the
requested fields, collections as ``{"data": [...]}``, errors as ``{"error": {...}}`` with the
Graph API's ``code`` (100 invalid parameter, 190 invalid token).
"""

from __future__ import annotations

import math

import numpy as np

from geo_assets.demo.reply import Reply, json_reply, trace_id
from geo_assets.demo.world import DemoImage, DemoWorld

MAX_LIMIT = 2000
BBOX_SLACK_DEG = 1e-9  # a box of exactly max_bbox_deg passes despite float rounding
THUMB_SIZES = ("256", "1024", "2048", "original")
ORIGINAL_WIDTH = 2048


def mly_error(status: int, message: str, code: int, *, subcode: int | None = None,
              transient: bool | None = None, error_data: dict | None = None) -> Reply:
    """An error body in the real API's shape (key order as recorded)."""
    err: dict = {"message": message, "type": "MLYApiException"}
    if transient is not None:
        err["is_transient"] = transient
    err["code"] = code
    if subcode is not None:
        err["error_subcode"] = subcode
    if error_data is not None:
        err["error_data"] = error_data
    err["fbtrace_id"] = trace_id()
    return json_reply(status, {"error": err})


def invalid_token() -> Reply:
    return mly_error(401, "Invalid OAuth 2.0 Access Token", 190, error_data={})


def rate_limited() -> Reply:
    return mly_error(403, "Application request limit reached", 4, transient=True)


def query_timeout() -> Reply:
    return mly_error(400, "Query Timeout", -3, subcode=3404014, transient=True)


def server_error() -> Reply:
    return mly_error(500, "An unknown error has occurred.", 1, transient=True)


def image_size(im: DemoImage, size: str) -> tuple[int, int]:
    """(width, height) of a thumbnail size; panoramas are 2:1, other images 4:3."""
    width = ORIGINAL_WIDTH if size == "original" else int(size)
    return width, width // 2 if im.is_pano else width * 3 // 4


def _point(lon: float, lat: float) -> dict:
    return {"type": "Point", "coordinates": [lon, lat]}


def _fields(im: DemoImage, thumb_url) -> dict:
    """Every field of an image entity, as callables (computed only when requested)."""
    rng = np.random.default_rng(int(im.image_id) % 2**63)
    noise = rng.normal(0, 1, 8)
    dlat, dlon = noise[0] * 2e-6, noise[1] * 2e-6
    width, height = image_size(im, "original")
    mesh_id, sfm_id = (str(int(x)) for x in rng.integers(10**14, 10**15, 2))
    detections = [{"id": str(int(x))} for x in rng.integers(10**14, 10**15, rng.integers(0, 6))]
    return {
        "id": lambda: im.image_id,
        "altitude": lambda: im.altitude,
        "atomic_scale": lambda: round(1 - abs(noise[2]) * 0.02, 8),
        "camera_parameters": lambda: [0.85 + noise[3] * 0.01, noise[4] * 1e-4, noise[5] * 1e-5],
        "camera_type": lambda: "spherical" if im.is_pano else "perspective",
        "captured_at": lambda: im.captured_at,
        "compass_angle": lambda: im.compass_angle,
        "computed_altitude": lambda: round(im.altitude + 30 + noise[6], 6),
        "computed_compass_angle": lambda: round((im.compass_angle + noise[7] * 3) % 360, 6),
        "computed_geometry": lambda: _point(im.lon + dlon, im.lat + dlat),
        "computed_rotation": lambda: [1.5 + noise[2] * 0.05, noise[3] * 0.1, noise[4] * 0.1],
        "creator": lambda: {"username": im.creator_username, "id": im.creator_id},
        "exif_orientation": lambda: 1,
        "geometry": lambda: _point(im.lon, im.lat),
        "height": lambda: height,
        "is_pano": lambda: im.is_pano,
        "make": lambda: "GoPro" if im.is_pano else "Demo",
        "model": lambda: "MAX" if im.is_pano else "StreetCam 1",
        "merge_cc": lambda: int(rng.integers(10**17, 9 * 10**18)),
        "mesh": lambda: {"id": mesh_id, "url": thumb_url("mesh")},
        "quality_score": lambda: im.quality_score,
        "sequence": lambda: im.sequence_id,
        "sfm_cluster": lambda: {"id": sfm_id, "url": thumb_url("sfm")},
        "width": lambda: width,
        "detections": lambda: {"data": detections},
        **{f"thumb_{s}_url": (lambda s=s: thumb_url(s)) for s in THUMB_SIZES},
    }


FIELD_NAMES = frozenset((
    "id", "altitude", "atomic_scale", "camera_parameters", "camera_type", "captured_at",
    "compass_angle", "computed_altitude", "computed_compass_angle", "computed_geometry",
    "computed_rotation", "creator", "exif_orientation", "geometry", "height", "is_pano", "make",
    "model", "merge_cc", "mesh", "quality_score", "sequence", "sfm_cluster", "width",
    "detections", *(f"thumb_{s}_url" for s in THUMB_SIZES)))


class MapillaryAPI:
    """Answers Graph API requests from a ``DemoWorld``."""

    def __init__(self, world: DemoWorld, token: str, signed_url, max_bbox_deg: float):
        self.world = world
        self.token = token
        self.signed_url = signed_url  # (image_id, size) -> absolute signed URL
        self.max_bbox_deg = max_bbox_deg
        self.lat, self.lon = world.image_lat_lon
        self.ids = np.array([im.image_id for im in world.images])
        self.held_back = np.zeros(len(self.ids), dtype=bool)  # not published yet (searches)

    def authorised(self, params: dict[str, str], headers) -> bool:
        auth = headers.get("Authorization", "") or ""
        scheme, _, value = auth.partition(" ")
        if scheme.lower() in ("oauth", "bearer") and value.strip():
            return value.strip() == self.token
        return params.get("access_token") == self.token

    def handle(self, route: str, params: dict[str, str]) -> Reply:
        """``route`` is the path after ``/mapillary/``."""
        if route == "images":
            return self.search(params)
        if route == "image_ids":
            return self.sequence_image_ids(params)
        return self.entity(route, params)

    def _requested(self, params: dict[str, str]) -> list[str] | Reply:
        names = [f.strip() for f in params.get("fields", "id").split(",") if f.strip()]
        unknown = [f for f in names if f not in FIELD_NAMES]
        if unknown:
            return mly_error(400, f"Tried accessing nonexisting field ({unknown[0]}) on node "
                             "type (Image)", 100)
        return names or ["id"]

    def _render(self, im: DemoImage, names: list[str]) -> dict:
        table = _fields(im, lambda size: self.signed_url(im.image_id, size))
        out = {}
        for name in names:
            if name == "computed_geometry" and not im.has_computed_geometry:
                continue  # the real API leaves it out when it has none
            out[name] = table[name]()
        return out

    def entity(self, image_id: str, params: dict[str, str]) -> Reply:
        im = self.world.image_index.get(image_id)
        if im is None:
            return mly_error(
                400, f"Unsupported get request. Object with ID '{image_id}' does not exist, "
                "cannot be loaded due to missing permissions, or does not support this "
                "operation", 100, subcode=33)
        names = self._requested(params)
        if isinstance(names, Reply):
            return names
        return json_reply(200, self._render(im, names))

    def sequence_image_ids(self, params: dict[str, str]) -> Reply:
        seq = params.get("sequence_id")
        if not seq:
            return mly_error(400, "Invalid parameter: sequence_id is required", 100)
        images = self.world.sequences.get(seq, ())
        return json_reply(200, {"data": [{"id": im.image_id} for im in images]})

    def search(self, params: dict[str, str]) -> Reply:
        names = self._requested(params)
        if isinstance(names, Reply):
            return names
        limit = _parse_limit(params.get("limit"))
        if limit is None:
            return mly_error(400, "Invalid parameter: limit must be a positive integer", 100)
        mask = self._filter(params)
        if isinstance(mask, Reply):
            return mask
        idx = np.flatnonzero(mask)[:limit]
        return json_reply(200, {"data": [self._render(self.world.images[i], names)
                                         for i in idx]})

    def _filter(self, params: dict[str, str]) -> np.ndarray | Reply:
        if not {"bbox", "sequence_id", "image_ids"} & set(params):
            return mly_error(400, "Invalid parameter: one of bbox, sequence_id or image_ids "
                             "is required", 100)
        mask = ~self.held_back
        if "bbox" in params:
            box = parse_bbox(params["bbox"])
            if box is None:
                return mly_error(400, "Invalid parameter: bbox must be "
                                 "min_lon,min_lat,max_lon,max_lat", 100)
            min_lon, min_lat, max_lon, max_lat = box
            if max(max_lon - min_lon, max_lat - min_lat) > self.max_bbox_deg + BBOX_SLACK_DEG:
                return mly_error(400, "Invalid request: the bbox area is too large, please "
                                 "use a smaller bbox", 100, transient=False)
            mask &= ((self.lon >= min_lon) & (self.lon <= max_lon)
                     & (self.lat >= min_lat) & (self.lat <= max_lat))
        images = self.world.images
        if "sequence_id" in params:
            mask &= np.array([im.sequence_id == params["sequence_id"] for im in images])
        if "image_ids" in params:
            wanted = set(params["image_ids"].split(","))
            mask &= np.array([im.image_id in wanted for im in images])
        if "is_pano" in params:
            want = params["is_pano"].lower() == "true"
            mask &= np.array([im.is_pano == want for im in images])
        if "creator_username" in params:
            mask &= np.array([im.creator_username == params["creator_username"]
                              for im in images])
        return mask


def parse_bbox(text: str) -> tuple[float, float, float, float] | None:
    """``"minLon,minLat,maxLon,maxLat"`` -> floats, or None when malformed or out of range."""
    try:
        box = tuple(float(v) for v in text.split(","))
    except ValueError:
        return None
    if len(box) != 4 or not all(math.isfinite(v) for v in box):
        return None
    min_lon, min_lat, max_lon, max_lat = box
    if not (-180 <= min_lon <= max_lon <= 180 and -90 <= min_lat <= max_lat <= 90):
        return None
    return box


def _parse_limit(text: str | None) -> int | None:
    if text is None:
        return MAX_LIMIT
    text = text.strip()
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        return None
    return min(int(text), MAX_LIMIT)
