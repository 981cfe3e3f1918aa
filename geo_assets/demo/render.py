"""Procedural street scenes as JPEG bytes, vectorised with numpy.

A scene is drawn at a small base resolution (the requested size divided by a whole factor,
at most ``BASE_MAX_W`` wide), then upscaled to the requested size and encoded. What a scene
shows depends on where it is: road colour, markings and kerb stones, building colours and
sign colour per country, sign shape per continent, sky and ground per climate band.
Per-image randomness (horizon, road geometry, buildings, exposure, noise) keeps images from
one place similar but not identical. Artefacts (dark, over-exposed, near-duplicate,
corrupt) are rendered so that filters have something to catch.
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from functools import lru_cache

import numpy as np
from PIL import Image

from geo_assets.demo.style import CLIMATES, country_style

BASE_MAX_W = 320
NOISE_MARGIN = 64
JPEG_QUALITY = 85


@lru_cache(maxsize=64)
def _axes(bh: int, bw: int) -> tuple[np.ndarray, np.ndarray]:
    """Column vector v (0 top .. 1 bottom) and row vector u (0 left .. 1 right)."""
    return (np.linspace(0, 1, bh, dtype=np.float32)[:, None],
            np.linspace(0, 1, bw, dtype=np.float32)[None, :])


def _coarse_noise(rng, bh: int, bw: int, cell: int) -> np.ndarray:
    """Blocky low-frequency noise in [0, 1), shape (bh, bw)."""
    small = rng.random((bh // cell + 1, bw // cell + 1), dtype=np.float32)
    return np.repeat(np.repeat(small, cell, 0), cell, 1)[:bh, :bw]


def _sky_and_ground(img, v, u, horizon, climate, rng):
    c = CLIMATES[climate]
    bh, bw = img.shape[:2]
    r0 = int(np.searchsorted(v[:, 0], horizon))  # first ground row
    t = np.clip(v[:r0] / horizon, 0, 1)
    img[:r0] = (np.asarray(c.sky_top, np.float32) * (1 - t)
                + np.asarray(c.sky_horizon, np.float32) * t)[:, None, :]
    rc = int(np.searchsorted(v[:, 0], horizon * 0.8))
    if c.clouds > 0 and rc > 0:
        clouds = (_coarse_noise(rng, rc, bw, 12) < c.clouds * 0.6)[..., None]
        img[:rc] += (235.0 - img[:rc]) * (0.7 * clouds)
    mix = _coarse_noise(rng, bh - r0, bw, 6)[..., None] * 0.5
    img[r0:] = (np.asarray(c.ground, np.float32) * (1 - mix)
                + np.asarray(c.ground_dark, np.float32) * mix)


def _skyline(img, v, u, horizon, item, style, heading, rng):
    """Buildings in towns, hills elsewhere, scrolling with the heading."""
    phase = heading / 360.0
    if item.urban:
        n = int(rng.integers(6, 12))
        col = np.floor(((u[0] + phase) % 1.0) * n).astype(np.int64)
        heights = rng.uniform(0.08, 0.35, n).astype(np.float32)
        present = rng.random(n) < 0.85
        colours = np.asarray(style.buildings, np.float32)[rng.integers(0, 3, n)]
        mask = (v >= horizon - heights[col][None, :]) & (v < horizon) & present[col][None, :]
        windows = ((u * n * 5) % 1.0 < 0.35) & ((v * 45) % 1.0 < 0.45)
        rgb = np.broadcast_to(colours[col][None, :, :], img.shape)
        img[mask] = rgb[mask]
        img[mask & windows] *= 0.55
        return
    dark = np.asarray(CLIMATES[item.climate].ground_dark, np.float32)
    amp, freq = rng.uniform(0.03, 0.12), rng.uniform(4, 12)
    top = horizon - amp * (0.5 + 0.5 * np.sin((u + phase) * freq * np.pi + rng.uniform(0, 6)))
    img[(v >= top) & (v < horizon)] = dark


# The road as seen from a camera standing on it, in camera heights (about 2.5 m): the
# bottom row of a 90-degree frame meets the ground one camera height ahead. A road is 2-3.5
# camera heights wide (two lanes of about 3 m), and the camera drives in the lane of its
# country's traffic side.
ROAD_HALF_WIDTH = (1.0, 1.6)
LANE_OFFSET = (0.25, 0.55)  # the camera's distance from the centre line, per half width
DASH_PERIOD = 1.5
KERB_STONE = 0.8


def ground_plane(u: np.ndarray, t: np.ndarray, relative_heading_deg: float
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Where the ground seen at image position (u, t) lies, relative to the camera, in camera
    heights: ``(across, along)`` the road, ``across`` to the right of the road's direction.

    ``u`` runs 0..1 left to right, ``t`` 0..1 from the horizon to the bottom of a 90-degree
    frame; ``relative_heading_deg`` is the heading minus the road's bearing. A pinhole camera
    at height 1 sees ground at depth ``1 / t``, ``2 * (u - 0.5)`` depths to the right.
    """
    rel = np.radians(relative_heading_deg)
    depth = 1.0 / np.maximum(t, 1e-3)
    right = 2.0 * (u - 0.5) * depth
    across = depth * np.sin(rel) + right * np.cos(rel)
    along = depth * np.cos(rel) - right * np.sin(rel)
    return across, along


def _road(img, v, u, horizon, style, heading, bearing, rng):
    """Asphalt, markings and kerb stones in the country's style, projected onto the frame.

    The camera stands on the road, so every heading shows it as a real one would: along the
    road it narrows to the vanishing point; looking across, it fills the bottom of the frame up
    to the far kerb, a horizontal line; the near side shows the kerb close by or nothing.
    """
    half_width = rng.uniform(*ROAD_HALF_WIDTH)
    lane = rng.uniform(*LANE_OFFSET) * half_width * (-1 if style.left_side else 1)
    r0 = int(np.searchsorted(v[:, 0], horizon, side="right"))  # first row below the horizon
    below = img[r0:]  # a view: drawing on it draws on the image
    t = (v[r0:] - horizon) / (1 - horizon)
    across, along = ground_plane(u, t, heading - bearing)
    d = np.abs(across + lane)  # distance from the road's centre line
    road = d < half_width
    below[road] = np.asarray(style.asphalt, np.float32)
    line_w = 0.025
    if style.pattern == "solid":
        line = d < line_w
    elif style.pattern == "dashed":
        line = (d < line_w) & ((along / DASH_PERIOD) % 1.0 < 0.5)
    elif style.pattern == "double":
        line = np.abs(d - 1.6 * line_w) < 0.7 * line_w
    else:
        line = np.zeros(road.shape, bool)
    if style.edge_lines:
        line = line | ((d > half_width - 0.15) & (d < half_width - 0.08))
    below[line & road] = np.asarray(style.marking, np.float32)
    kerb = (d >= half_width) & (d < half_width + 0.15)
    stones = (along / KERB_STONE) % 1.0 < 0.5
    below[kerb & stones] = np.asarray(style.kerb[0], np.float32)
    below[kerb & ~stones] = np.asarray(style.kerb[1], np.float32)


def _shape_mask(shape: str, du: np.ndarray, dv: np.ndarray) -> np.ndarray:
    """Inside-mask of a sign shape in local coordinates scaled to [-1, 1]."""
    adu, adv = np.abs(du), np.abs(dv)
    if shape == "circle":
        return du * du + dv * dv < 1
    if shape == "diamond":
        return adu + adv < 1
    if shape == "square":
        return (adu < 0.85) & (adv < 0.85)
    if shape == "triangle":
        return (dv < 0.8) & (adu < (dv + 1.0) * 0.55)
    if shape == "inverted_triangle":
        return (dv > -0.8) & (adu < (1.0 - dv) * 0.55)
    return (adu < 0.92) & (adv < 0.92) & (adu + adv < 1.3)  # octagon


# Horizontal offset of a sign's centre from the image's middle, as a share of the width. A
# sign is often the only country cue of a view across the road (a Street View heading), so it
# stands where a model's input keeps it: a 4:3 frame's evaluation centre crop keeps the middle
# 66 % of the width (0.875 of the short side), and the sign's edge stays inside it.
SIGN_OFFSET = (0.14, 0.24)


def _sign(img, horizon, style, rng):
    """A road sign on a pole beside the road, drawn only inside its bounding box."""
    bh, bw = img.shape[:2]
    side = -1 if style.left_side else 1
    cx = int(bw * (0.5 + side * rng.uniform(*SIGN_OFFSET)))
    cy = int(bh * (horizon - rng.uniform(0.0, 0.06)))
    r = max(3, int(bh * rng.uniform(0.06, 0.09)))
    pole_w = max(1, r // 6)
    img[cy:min(bh, cy + 4 * r), max(0, cx - pole_w):cx + pole_w] = 110.0
    y0, y1, x0, x1 = max(0, cy - r), min(bh, cy + r), max(0, cx - r), min(bw, cx + r)
    dv = (np.arange(y0, y1, dtype=np.float32)[:, None] - cy) / r
    du = (np.arange(x0, x1, dtype=np.float32)[None, :] - cx) / r
    outer = _shape_mask(style.sign_shape, du, dv)
    inner = _shape_mask(style.sign_shape, du / 0.72, dv / 0.72)
    patch = img[y0:y1, x0:x1]
    patch[outer] = 245.0
    patch[inner] = np.asarray(style.sign, np.float32)


def _scene_rng(item) -> tuple[np.random.Generator, float]:
    """The scene's random stream and the compass direction of the road ``item`` stands on:
    a Mapillary frame's own heading (its camera looks along the road), a panorama's the
    stream's first draw (drawn for every item, so the scene's other draws follow it)."""
    rng = np.random.default_rng([item.render_seed, 1])
    drawn = rng.uniform(0, 360)
    return rng, float(getattr(item, "compass_angle", drawn))


def road_bearing(item) -> float:
    """The compass direction of the road ``item`` stands on."""
    return _scene_rng(item)[1]


def render_array(item, width: int, height: int, heading: float | None = None,
                 pitch: float = 0.0, fov: float = 90.0) -> np.ndarray:
    """The scene of ``item`` (a DemoImage or DemoPano) at base resolution, uint8 HxWx3."""
    bw, bh = base_size(width, height)
    rng, bearing = _scene_rng(item)
    heading = bearing if heading is None else float(heading)
    style = country_style(item.country, item.continent)
    v, u = _axes(bh, bw)
    zoom = 90.0 / max(fov, 1.0)
    v = (0.5 + (v - 0.5) / zoom).astype(np.float32)
    u = (0.5 + (u - 0.5) / zoom).astype(np.float32)
    horizon = 0.5 + rng.uniform(-0.04, 0.04) + pitch / 180.0
    img = np.empty((bh, bw, 3), np.float32)
    _sky_and_ground(img, v, u, horizon, item.climate, rng)
    _skyline(img, v, u, horizon, item, style, heading, rng)
    _road(img, v, u, horizon, style, heading, bearing, rng)
    _sign(img, horizon, style, rng)
    return _finish(img, item, rng)


@lru_cache(maxsize=16)
def _noise_bank(bh: int, bw: int) -> np.ndarray:
    """Fixed sensor noise, larger than the image; each image reads its own window of it."""
    rng = np.random.default_rng(12345)
    return rng.standard_normal((bh + NOISE_MARGIN, bw + NOISE_MARGIN), dtype=np.float32) * 5.0


def _finish(img: np.ndarray, item, rng) -> np.ndarray:
    """Exposure, sensor noise and the dark / over-exposed artefacts."""
    bh, bw = img.shape[:2]
    noise_seed = getattr(item, "noise_seed", item.render_seed)
    dy, dx = noise_seed % NOISE_MARGIN, (noise_seed // NOISE_MARGIN) % NOISE_MARGIN
    img *= rng.uniform(0.85, 1.1)
    img += _noise_bank(bh, bw)[dy:dy + bh, dx:dx + bw, None]
    artefact = getattr(item, "artefact", None)
    if artefact == "dark":
        img *= 0.06
    elif artefact == "overexposed":
        img[:] = 255.0 - (255.0 - np.clip(img, 0, 255)) * 0.05
    return np.clip(img, 0, 255).astype(np.uint8)


def base_size(width: int, height: int) -> tuple[int, int]:
    """Drawing resolution: the output size divided by a whole factor, at most BASE_MAX_W."""
    factor = -(-width // BASE_MAX_W)
    return -(-width // factor), max(1, -(-height // factor))


def encode_jpeg(array: np.ndarray, width: int, height: int, quality: int = JPEG_QUALITY) -> bytes:
    """Upscale (nearest: whole-factor blocks) to ``width`` x ``height``; baseline JPEG."""
    im = Image.fromarray(array)
    if im.size != (width, height):
        im = im.resize((width, height), Image.NEAREST)
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def render_image(world, image, width: int, height: int, heading: float | None = None,
                 *, pitch: float = 0.0, fov: float = 90.0) -> bytes:
    """JPEG bytes of ``image`` (a DemoImage or DemoPano of ``world``) at width x height.

    ``heading`` defaults to a Mapillary image's compass angle. Corrupt images come back
    truncated (no end-of-image marker), as a broken upload would.
    """
    del world  # the image carries everything its pixels depend on
    data = encode_jpeg(render_array(image, width, height, heading, pitch, fov), width, height)
    if getattr(image, "artefact", None) == "corrupt":
        return data[: len(data) * 2 // 5]
    return data


def no_imagery_jpeg(width: int, height: int) -> bytes:
    """The plain grey picture Street View serves where it has no imagery."""
    return encode_jpeg(np.full((1, 1, 3), 228, np.uint8), width, height)


class RenderCache:
    """Thread-safe LRU of rendered JPEG bytes, bounded by total size."""

    def __init__(self, max_bytes: int = 256 * 2**20):
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple, bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get_or_render(self, key: tuple, render) -> bytes:
        with self._lock:
            data = self._items.get(key)
            if data is not None:
                self._items.move_to_end(key)
                self.hits += 1
                return data
            self.misses += 1
        data = render()
        with self._lock:
            if key not in self._items:
                self._items[key] = data
                self._bytes += len(data)
            while self._bytes > self.max_bytes and self._items:
                _, old = self._items.popitem(last=False)
                self._bytes -= len(old)
        return data
