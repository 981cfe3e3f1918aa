"""Mapillary-style coverage vector tiles of the demo world (``mly1_public``).

Layers as in Mapillary's public coverage tiles: ``overview`` (one point per sequence) at
zooms 0-5, ``sequence`` (lines) at zooms 6-14, and ``image`` (points) at zoom 14, with the
same property names as the recorded z14 tiles. Empty tiles are empty (0-byte) responses.
"""

from __future__ import annotations

import numpy as np

from geo_assets.demo.mvt import encode_tile
from geo_assets.demo.reply import Reply, text_reply
from geo_assets.demo.world import DemoWorld

TILE_PREFIX = "/mapillary-tiles/maps/vtp/mly1_public/2/"
EXTENT = 4096
MAX_ZOOM = 14
SEQUENCE_MIN_ZOOM = 6
BUFFER = 64 / EXTENT  # features this far outside the tile (in tile units) are kept
MVT_CONTENT_TYPE = "application/x-protobuf"


def mercator(lat, lon) -> tuple[np.ndarray, np.ndarray]:
    """Web Mercator world coordinates in [0, 1) (x east, y south)."""
    lat = np.clip(np.asarray(lat, dtype=float), -85.0511, 85.0511)
    x = (np.asarray(lon, dtype=float) + 180.0) / 360.0
    y = (1.0 - np.arcsinh(np.tan(np.radians(lat))) / np.pi) / 2.0
    return x, y


class CoverageTiles:
    """Builds coverage tiles on request from the world's images and sequences."""

    def __init__(self, world: DemoWorld):
        self.world = world
        lat, lon = world.image_lat_lon
        self.x, self.y = mercator(lat, lon)
        self.seq_ids = list(world.sequences)
        index = {im.image_id: i for i, im in enumerate(world.images)}
        self.seq_rows = [np.array([index[im.image_id] for im in world.sequences[s]])
                         for s in self.seq_ids]
        self.seq_first = np.array([rows[0] for rows in self.seq_rows])

    def reply(self, path: str) -> Reply:
        parsed = parse_tile_path(path)
        if parsed is None:
            return text_reply(404, "Tile not found")
        z, x, y = parsed
        return Reply(200, self.tile(z, x, y), MVT_CONTENT_TYPE)

    def tile(self, z: int, tx: int, ty: int) -> bytes:
        n = 2 ** z
        px, py = (self.x * n - tx) * EXTENT, (self.y * n - ty) * EXTENT
        inside = (px >= 0) & (px < EXTENT) & (py >= 0) & (py < EXTENT)
        if z < SEQUENCE_MIN_ZOOM:
            return encode_tile({"overview": self._overview(px, py, inside)}, EXTENT)
        layers = {"sequence": self._sequences(px, py)}
        if z == MAX_ZOOM:
            layers["image"] = self._images(px, py, inside, len(layers["sequence"]))
        return encode_tile(layers, EXTENT)

    def _overview(self, px, py, inside) -> list[dict]:
        feats = []
        for k in np.flatnonzero(inside[self.seq_first]):
            im = self.world.images[self.seq_first[k]]
            i = self.seq_first[k]
            feats.append(_feature(len(feats), "Point", [[(int(px[i]), int(py[i]))]], {
                "captured_at": im.captured_at, "id": int(im.image_id),
                "image_id": int(im.image_id), "is_pano": im.is_pano,
                "sequence_id": im.sequence_id}))
        return feats

    def _sequences(self, px, py) -> list[dict]:
        feats = []
        lo, hi = -BUFFER * EXTENT, (1 + BUFFER) * EXTENT
        for sid, rows in zip(self.seq_ids, self.seq_rows):
            sx, sy = px[rows], py[rows]
            if sx.max() < lo or sx.min() >= hi or sy.max() < lo or sy.min() >= hi:
                continue
            pts = _dedupe(list(zip(sx.astype(int).tolist(), sy.astype(int).tolist())))
            if len(pts) < 2:
                pts = pts * 2
            first = self.world.images[rows[0]]
            feats.append(_feature(len(feats), "LineString", [pts], {
                "captured_at": first.captured_at, "id": sid,
                "image_id": int(first.image_id), "is_pano": first.is_pano}))
        return feats

    def _images(self, px, py, inside, first_id: int) -> list[dict]:
        feats = []
        for i in np.flatnonzero(inside):
            im = self.world.images[i]
            feats.append(_feature(first_id + len(feats), "Point",
                                  [[(int(px[i]), int(py[i]))]], {
                "captured_at": im.captured_at, "compass_angle": round(im.compass_angle),
                "id": int(im.image_id), "is_pano": im.is_pano,
                "sequence_id": im.sequence_id}))
        return feats


def _feature(fid: int, kind: str, parts, properties: dict) -> dict:
    return {"id": fid, "type": kind, "parts": parts, "properties": properties}


def _dedupe(points: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out = points[:1]
    for p in points[1:]:
        if p != out[-1]:
            out.append(p)
    return out


def parse_tile_path(path: str) -> tuple[int, int, int] | None:
    """``.../2/{z}/{x}/{y}`` -> (z, x, y), or None when malformed or out of range."""
    parts = path[len(TILE_PREFIX):].split("/")
    if len(parts) != 3 or not all(p.isascii() and p.isdigit() for p in parts):
        return None
    z, x, y = (int(p) for p in parts)
    if z > MAX_ZOOM or x >= 2 ** z or y >= 2 ** z:
        return None
    return z, x, y
