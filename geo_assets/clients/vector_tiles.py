"""A small Mapbox Vector Tile (MVT 2.1) decoder: enough to read Mapillary coverage tiles.

Mapillary's ``mly1_public`` tiles hold an ``image`` layer of points at zoom 14 and a
``sequence`` layer of lines at lower zooms (plus ``overview`` points at zooms 0-5). We only
need where imagery exists, so features decode to lon/lat vertex arrays and their properties.
The protobuf wire format is parsed directly (no compiled dependency).
"""

from __future__ import annotations

import gzip
import math
import struct
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Feature:
    geom_type: int                     # 1 point, 2 line, 3 polygon
    lonlat: np.ndarray                 # (N, 2) vertices in degrees
    properties: dict = field(default_factory=dict)
    id: int | None = None


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7


def _fields(buf: bytes):
    """Yield (field number, wire type, value) of one protobuf message."""
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = buf[pos:pos + 8], pos + 8
        elif wire == 2:
            length, pos = _varint(buf, pos)
            value, pos = buf[pos:pos + length], pos + length
        elif wire == 5:
            value, pos = buf[pos:pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield number, wire, value


def _packed_uints(buf: bytes) -> list[int]:
    out, pos = [], 0
    while pos < len(buf):
        v, pos = _varint(buf, pos)
        out.append(v)
    return out


def _zigzag(n: int) -> int:
    return (n >> 1) ^ -(n & 1)


def _value(buf: bytes):
    for number, _wire, v in _fields(buf):
        if number == 1:
            return v.decode("utf-8", "replace")
        if number == 2:
            return struct.unpack("<f", v)[0]
        if number == 3:
            return struct.unpack("<d", v)[0]
        if number in (4, 5):
            return v if v < 2**63 else v - 2**64
        if number == 6:
            return _zigzag(v)
        if number == 7:
            return bool(v)
    return None


def _geometry(commands: list[int]) -> list[tuple[int, int]]:
    """Decode MVT geometry commands into tile-space vertices (all parts concatenated)."""
    x = y = 0
    out: list[tuple[int, int]] = []
    i = 0
    while i < len(commands):
        cmd, count = commands[i] & 7, commands[i] >> 3
        i += 1
        if cmd == 7:  # ClosePath
            continue
        for _ in range(count):
            x += _zigzag(commands[i])
            y += _zigzag(commands[i + 1])
            i += 2
            out.append((x, y))
    return out


def tile_to_lonlat(px: np.ndarray, z: int, x: int, y: int, extent: int) -> np.ndarray:
    """Tile pixel coordinates -> (lon, lat) in degrees (Web Mercator)."""
    n = 2.0**z
    fx = (x + px[:, 0] / extent) / n
    fy = (y + px[:, 1] / extent) / n
    lon = fx * 360.0 - 180.0
    lat = np.degrees(np.arctan(np.sinh(math.pi * (1 - 2 * fy))))
    return np.stack([lon, lat], axis=1)


def _layer(buf: bytes, z: int, x: int, y: int) -> tuple[str, list[Feature]]:
    name, extent, keys, values, raw = "", 4096, [], [], []
    for number, _wire, v in _fields(buf):
        if number == 1:
            name = v.decode()
        elif number == 2:
            raw.append(v)
        elif number == 3:
            keys.append(v.decode())
        elif number == 4:
            values.append(_value(v))
        elif number == 5:
            extent = v
    features = []
    for fbuf in raw:
        fid, tags, gtype, geom = None, [], 0, []
        for number, _wire, v in _fields(fbuf):
            if number == 1:
                fid = v
            elif number == 2:
                tags = _packed_uints(v)
            elif number == 3:
                gtype = v
            elif number == 4:
                geom = _packed_uints(v)
        px = np.asarray(_geometry(geom), dtype=np.float64).reshape(-1, 2)
        props = {keys[tags[i]]: values[tags[i + 1]] for i in range(0, len(tags) - 1, 2)}
        features.append(Feature(gtype, tile_to_lonlat(px, z, x, y, extent), props, fid))
    return name, features


def decode_tile(data: bytes, z: int, x: int, y: int) -> dict[str, list[Feature]]:
    """Decode an MVT tile (optionally gzip-compressed) into ``{layer name: features}``."""
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    layers: dict[str, list[Feature]] = {}
    for number, _wire, v in _fields(data):
        if number == 3:
            name, features = _layer(v, z, x, y)
            layers.setdefault(name, []).extend(features)
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
