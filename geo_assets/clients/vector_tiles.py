"""Mapbox Vector Tile decoding (via ``mapbox_vector_tile``) and Web Mercator tile maths.

Mapillary's ``mly1_public`` tiles hold an ``image`` layer of points at zoom 14 and a
``sequence`` layer of lines at lower zooms (plus ``overview`` points at zooms 0-5). We only
need where imagery exists, so features decode to lon/lat vertex arrays and their properties.
"""

from __future__ import annotations

import gzip
import math
from dataclasses import dataclass, field

import mapbox_vector_tile
import numpy as np
from google.protobuf.message import DecodeError


@dataclass
class Feature:
    geom_type: int                     # 1 point, 2 line, 3 polygon
    lonlat: np.ndarray                 # (N, 2) vertices in degrees
    properties: dict = field(default_factory=dict)
    id: int | None = None


def _vertices(coords) -> list:
    """All vertices of a (multi-)point/line/polygon coordinate array, parts concatenated."""
    if not coords:
        return []
    if isinstance(coords[0], int | float):
        return [coords]
    return [v for part in coords for v in _vertices(part)]


def tile_to_lonlat(px: np.ndarray, z: int, x: int, y: int, extent: int) -> np.ndarray:
    """Tile pixel coordinates -> (lon, lat) in degrees (Web Mercator)."""
    n = 2.0**z
    fx = (x + px[:, 0] / extent) / n
    fy = (y + px[:, 1] / extent) / n
    lon = fx * 360.0 - 180.0
    lat = np.degrees(np.arctan(np.sinh(math.pi * (1 - 2 * fy))))
    return np.stack([lon, lat], axis=1)


def decode_tile(data: bytes, z: int, x: int, y: int) -> dict[str, list[Feature]]:
    """Decode an MVT tile (optionally gzip-compressed) into ``{layer name: features}``.

    Malformed tiles raise ``ValueError``.
    """
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    try:
        tile = mapbox_vector_tile.decode(
            data, default_options={"y_coord_down": True, "geojson": False})
    except DecodeError as exc:
        raise ValueError(f"unreadable vector tile: {exc}") from exc
    layers: dict[str, list[Feature]] = {}
    for name, layer in tile.items():
        extent = layer["extent"]
        features = []
        for f in layer["features"]:
            px = np.asarray(_vertices(f["geometry"]["coordinates"]),
                            dtype=np.float64).reshape(-1, 2)
            features.append(Feature(f["type"], tile_to_lonlat(px, z, x, y, extent),
                                    f["properties"], f["id"]))
        layers[name] = features
    return layers


def lonlat_to_tile(lon: float, lat: float, z: int) -> tuple[int, int]:
    """The (x, y) of the zoom-``z`` Web Mercator tile holding a point (clamped)."""
    n = 2**z
    lat = max(min(lat, 85.0511), -85.0511)
    x = int((lon + 180.0) / 360.0 * n)
    y = int((1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * n)
    return min(max(x, 0), n - 1), min(max(y, 0), n - 1)


def tiles_covering(bbox: tuple[float, float, float, float], z: int) -> list[tuple[int, int]]:
    """Every zoom-``z`` tile that intersects ``(min_lon, min_lat, max_lon, max_lat)``."""
    min_lon, min_lat, max_lon, max_lat = bbox
    x0, y0 = lonlat_to_tile(min_lon, max_lat, z)
    x1, y1 = lonlat_to_tile(np.nextafter(max_lon, -np.inf), np.nextafter(min_lat, np.inf), z)
    return [(x, y) for x in range(x0, x1 + 1) for y in range(y0, y1 + 1)]
