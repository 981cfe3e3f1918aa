"""Request handlers of the demo Street View Static API (``{base}/google/maps/api/streetview``).

Metadata answers HTTP 200 with a JSON ``status`` (OK, ZERO_RESULTS, NOT_FOUND,
OVER_QUERY_LIMIT, REQUEST_DENIED, INVALID_REQUEST, UNKNOWN_ERROR), snapping ``location``
to the nearest panorama within ``radius`` metres. Images are JPEGs of at most 640x640 and
``fov`` at most 120; bad keys, signatures and parameters get Google's plain-text errors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scipy.spatial import cKDTree

from geo_assets.demo.reply import Reply, json_reply, text_reply
from geo_assets.demo.signing import verify_google_signature
from geo_assets.demo.world import DemoPano, DemoWorld
from geo_assets.sphere import chord_to_km, unit_vectors

MAX_SIZE = 640
MAX_FOV = 120.0
REJECTED = "The Google Maps Platform server rejected your request. "


def parse_location(text: str) -> tuple[float, float] | None | str:
    """(lat, lon), None when it is not "lat,lng", or "invalid" when out of range."""
    parts = text.split(",")
    try:
        lat, lon = (float(p) for p in parts)
    except ValueError:
        return None
    if not (math.isfinite(lat) and math.isfinite(lon) and -90 <= lat <= 90
            and -180 <= lon <= 180):
        return "invalid"
    return lat, lon


@dataclass(frozen=True)
class ImageRequest:
    """A validated Static API image request."""

    pano: DemoPano | None
    width: int
    height: int
    heading: float
    pitch: float
    fov: float
    return_error_code: bool


class StreetViewAPI:
    """Answers Street View metadata and image requests from a ``DemoWorld``."""

    def __init__(self, world: DemoWorld, key: str, signing_secret: str | None):
        self.world = world
        self.key = key
        self.signing_secret = signing_secret
        self._tree = cKDTree(unit_vectors([p.lat for p in world.panoramas],
                                          [p.lon for p in world.panoramas]))

    def nearest(self, lat: float, lon: float, radius_m: float) -> DemoPano | None:
        """The closest panorama within ``radius_m`` metres, or None."""
        if not self.world.panoramas:
            return None
        dist, i = self._tree.query(unit_vectors([lat], [lon])[0])
        metres = 1000.0 * chord_to_km(dist)
        return self.world.panoramas[int(i)] if metres <= radius_m else None

    def key_problem(self, path: str, params: dict[str, str], raw_query: str,
                    require_signature: bool) -> str | None:
        """Why the key or signature is refused, or None when they are fine."""
        key = params.get("key")
        if not key:
            return ("You must use an API key to authenticate each request to Google Maps "
                    "Platform APIs.")
        if key != self.key:
            return "The provided API key is invalid."
        signed = "signature" in params
        if (self.signing_secret and (signed or require_signature)
                and not verify_google_signature(path, raw_query, self.signing_secret)):
            return "Unable to authenticate the request. The URL signature is invalid."
        return None

    def metadata(self, path: str, params: dict[str, str], raw_query: str) -> Reply:
        problem = self.key_problem(path, params, raw_query, require_signature=False)
        if problem:
            return json_reply(200, {"error_message": problem, "status": "REQUEST_DENIED"})
        found = self._find(params)
        if isinstance(found, str):
            return json_reply(200, _status_body(found))
        return json_reply(200, {
            "copyright": found.copyright, "date": found.date,
            "location": {"lat": found.lat, "lng": found.lon},
            "pano_id": found.pano_id, "status": "OK"})

    def _find(self, params: dict[str, str]) -> DemoPano | str:
        """The requested panorama, or the status that says why there is none."""
        if "pano" in params:
            pano = self.world.pano_index.get(params["pano"])
            return pano if pano else "ZERO_RESULTS"
        if "location" not in params:
            return "INVALID_REQUEST"
        try:
            radius = float(params.get("radius", "50"))
        except ValueError:
            return "INVALID_REQUEST"
        if params.get("source", "default") not in ("default", "outdoor") or radius < 0:
            return "INVALID_REQUEST"
        where = parse_location(params["location"])
        if where is None:
            return "NOT_FOUND"  # not coordinates: an address the demo cannot geocode
        if where == "invalid":
            return "INVALID_REQUEST"
        pano = self.nearest(where[0], where[1], radius)
        return pano if pano else "ZERO_RESULTS"

    def image_request(self, path: str, params: dict[str, str],
                      raw_query: str) -> ImageRequest | Reply:
        """Validate an image request, or the error reply Google would give."""
        problem = self.key_problem(path, params, raw_query, require_signature=True)
        if problem:
            return text_reply(403, REJECTED + problem)
        try:
            width, height = (int(v) for v in params.get("size", "").lower().split("x"))
            heading = float(params.get("heading", "0")) % 360.0
            pitch = float(params.get("pitch", "0"))
            fov = float(params.get("fov", "90"))
            if not math.isfinite(heading):
                raise ValueError(heading)
        except ValueError:
            return text_reply(400, REJECTED + "Invalid request. Invalid or missing 'size', "
                              "'heading', 'pitch' or 'fov' parameter.")
        if not (0 < width <= MAX_SIZE and 0 < height <= MAX_SIZE):
            return text_reply(400, REJECTED + f"Invalid request. The 'size' parameter must be "
                              f"at most {MAX_SIZE}x{MAX_SIZE}.")
        if not (0 < fov <= MAX_FOV and -90 <= pitch <= 90):
            return text_reply(400, REJECTED + "Invalid request. 'fov' must be in (0, 120] and "
                              "'pitch' in [-90, 90].")
        found = self._find(params)
        if found == "INVALID_REQUEST":
            return text_reply(400, REJECTED + "Invalid request. Missing the 'location' or "
                              "'pano' parameter.")
        pano = found if isinstance(found, DemoPano) else None
        return ImageRequest(pano, width, height, heading, pitch, fov,
                            params.get("return_error_code", "").lower() == "true")


def _status_body(status: str) -> dict:
    messages = {"INVALID_REQUEST": "Invalid request. Missing or invalid 'location', 'pano', "
                                   "'radius' or 'source' parameter."}
    body = {"status": status}
    if status in messages:
        body = {"error_message": messages[status], "status": status}
    return body
