"""A minimal Mapbox Vector Tile (protobuf, spec 2.1) encoder for the demo server.

Enough for point and line layers: ``encode_tile({"layer": [feature, ...]})`` where a feature
is ``{"id": int, "type": "Point" | "LineString", "parts": [[(x, y), ...]], "properties":
{...}}`` in tile pixel coordinates (y down). Decode with ``mapbox_vector_tile.decode(data,
default_options={"y_coord_down": True})`` or ``geo_assets.clients.vector_tiles.decode_tile``.

Hand-written rather than ``mapbox_vector_tile.encode`` because that drops zero-length lines,
and a sequence whose images all fall in one tile pixel must still show up, so that a
crawler following the tiles down finds its images.
"""

from __future__ import annotations

import struct

GEOM_TYPES = {"Point": 1, "LineString": 2, "Polygon": 3}
MOVE_TO, LINE_TO = 1, 2


def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _zigzag(n: int) -> int:
    return (n << 1) ^ (n >> 63)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _uint_field(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value)


def _value(v) -> bytes:
    """A ``Value`` message: string 1, double 3, int 4, bool 7."""
    if isinstance(v, bool):
        return _uint_field(7, int(v))
    if isinstance(v, int):
        return _uint_field(4, v)
    if isinstance(v, float):
        return _varint(3 << 3 | 1) + struct.pack("<d", v)
    return _field(1, str(v).encode())


def _geometry(kind: str, parts) -> list[int]:
    cmds: list[int] = []
    cx = cy = 0
    for part in parts:
        if kind == "Point":
            cmds.append(MOVE_TO | len(part) << 3)
            for x, y in part:
                cmds += [_zigzag(x - cx), _zigzag(y - cy)]
                cx, cy = x, y
            continue
        (x0, y0), rest = part[0], part[1:]
        cmds += [MOVE_TO | 1 << 3, _zigzag(x0 - cx), _zigzag(y0 - cy), LINE_TO | len(rest) << 3]
        cx, cy = x0, y0
        for x, y in rest:
            cmds += [_zigzag(x - cx), _zigzag(y - cy)]
            cx, cy = x, y
    return cmds


def _layer(name: str, features: list[dict], extent: int) -> bytes:
    keys: dict[str, int] = {}
    values: dict[tuple, int] = {}
    body = bytearray()
    for f in features:
        tags = []
        for k, v in f["properties"].items():
            tags += [keys.setdefault(k, len(keys)),
                     values.setdefault((type(v).__name__, v), len(values))]
        feat = _uint_field(1, f["id"]) + _field(2, b"".join(map(_varint, tags)))
        feat += _uint_field(3, GEOM_TYPES[f["type"]])
        feat += _field(4, b"".join(map(_varint, _geometry(f["type"], f["parts"]))))
        body += _field(2, feat)
    out = _uint_field(15, 2) + _field(1, name.encode()) + bytes(body)
    out += b"".join(_field(3, k.encode()) for k in keys)
    out += b"".join(_field(4, _value(v)) for _, v in values)
    return out + _uint_field(5, extent)


def encode_tile(layers: dict[str, list[dict]], extent: int = 4096) -> bytes:
    """Encode layers (skipping empty ones) as a vector tile."""
    return b"".join(_field(3, _layer(name, feats, extent))
                    for name, feats in layers.items() if feats)
