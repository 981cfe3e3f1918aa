"""A minimal Mapbox Vector Tile (protobuf, spec 2.1) encoder and decoder, no dependencies.

Enough for point and line layers: ``encode_tile({"layer": [feature, ...]})`` where a feature
is ``{"id": int, "type": "Point" | "LineString", "parts": [[(x, y), ...]], "properties":
{...}}`` in tile pixel coordinates, and ``decode_tile(bytes)`` returning the same structure
per layer, with ``version`` and ``extent``.
"""

from __future__ import annotations

import struct

GEOM_TYPES = {"Point": 1, "LineString": 2, "Polygon": 3}
GEOM_NAMES = {v: k for k, v in GEOM_TYPES.items()}
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


def _unzigzag(n: int) -> int:
    return (n >> 1) ^ -(n & 1)


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


# --- decoding -------------------------------------------------------------------------------

def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7


def _fields(buf: bytes):
    """Yield (field number, wire type, value) of a protobuf message."""
    pos = 0
    while pos < len(buf):
        key, pos = _read_varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _read_varint(buf, pos)
        elif wire == 2:
            n, pos = _read_varint(buf, pos)
            value, pos = buf[pos:pos + n], pos + n
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            value, pos = buf[pos:pos + size], pos + size
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield number, wire, value


def _packed(buf: bytes) -> list[int]:
    out, pos = [], 0
    while pos < len(buf):
        v, pos = _read_varint(buf, pos)
        out.append(v)
    return out


def _decode_value(buf: bytes):
    for number, _, v in _fields(buf):
        if number == 1:
            return v.decode()
        if number == 2:
            return struct.unpack("<f", v)[0]
        if number == 3:
            return struct.unpack("<d", v)[0]
        if number in (4, 5):
            return v - (1 << 64) if number == 4 and v >= 1 << 63 else v
        if number == 6:
            return _unzigzag(v)
        if number == 7:
            return bool(v)
    return None


def _decode_geometry(cmds: list[int]) -> list[list[tuple[int, int]]]:
    parts: list[list[tuple[int, int]]] = []
    x = y = i = 0
    while i < len(cmds):
        cmd, count = cmds[i] & 7, cmds[i] >> 3
        i += 1
        if cmd == 7:  # ClosePath
            continue
        for _ in range(count):
            x += _unzigzag(cmds[i])
            y += _unzigzag(cmds[i + 1])
            i += 2
            if cmd == MOVE_TO:
                parts.append([])
            parts[-1].append((x, y))
    return parts


def _decode_layer(buf: bytes) -> tuple[str, dict]:
    name, keys, values, raw_features = "", [], [], []
    layer = {"version": 1, "extent": 4096}
    for number, _, v in _fields(buf):
        if number == 1:
            name = v.decode()
        elif number == 2:
            raw_features.append(v)
        elif number == 3:
            keys.append(v.decode())
        elif number == 4:
            values.append(_decode_value(v))
        elif number == 5:
            layer["extent"] = v
        elif number == 15:
            layer["version"] = v
    features = []
    for raw in raw_features:
        f = {"id": None, "type": None, "parts": [], "properties": {}}
        for number, _, v in _fields(raw):
            if number == 1:
                f["id"] = v
            elif number == 2:
                tags = _packed(v)
                f["properties"] = {keys[k]: values[t] for k, t in zip(tags[::2], tags[1::2])}
            elif number == 3:
                f["type"] = GEOM_NAMES.get(v)
            elif number == 4:
                f["parts"] = _decode_geometry(_packed(v))
        features.append(f)
    layer["features"] = features
    return name, layer


def decode_tile(data: bytes) -> dict[str, dict]:
    """layer name -> {"version", "extent", "features": [{id, type, parts, properties}]}."""
    return dict(_decode_layer(v) for number, _, v in _fields(data) if number == 3)
