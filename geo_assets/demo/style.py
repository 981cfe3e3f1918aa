"""What a place looks like: per-country road and sign styles, per-climate sky and ground.

A country's style is a pure function of its ISO code (the same in every world), so a model
trained on one seed recognises the country in another.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

SIGN_SHAPES: dict[str, str] = {
    "Europe": "circle", "North America": "diamond", "South America": "square",
    "Africa": "triangle", "Asia": "octagon", "Oceania": "inverted_triangle",
}
MARKING_PATTERNS = ("solid", "dashed", "double", "none")


@dataclass(frozen=True)
class CountryStyle:
    asphalt: tuple[int, int, int]
    marking: tuple[int, int, int]
    pattern: str
    edge_lines: bool
    buildings: tuple[tuple[int, int, int], ...]
    sign: tuple[int, int, int]
    sign_shape: str
    left_side: bool  # the sign (and traffic) on the left
    kerb: tuple[tuple[int, int, int], tuple[int, int, int]]  # alternating kerb stones


@dataclass(frozen=True)
class ClimateStyle:
    sky_top: tuple[int, int, int]
    sky_horizon: tuple[int, int, int]
    ground: tuple[int, int, int]
    ground_dark: tuple[int, int, int]
    clouds: float  # 0..1 cloud cover


CLIMATES: dict[str, ClimateStyle] = {
    "tropical": ClimateStyle((20, 80, 200), (120, 190, 240), (30, 130, 40), (10, 70, 20), 0.3),
    "subtropical": ClimateStyle((90, 150, 215), (215, 205, 180), (190, 160, 95),
                                (140, 110, 60), 0.05),
    "temperate": ClimateStyle((60, 110, 190), (170, 200, 230), (90, 160, 70), (50, 100, 40), 0.5),
    "cool": ClimateStyle((110, 130, 160), (190, 195, 205), (60, 100, 80), (30, 60, 50), 0.8),
    "polar": ClimateStyle((150, 170, 200), (225, 230, 240), (235, 238, 245), (170, 180, 190),
                          0.6),
}


def _hsv_to_rgb(h: float, s: float, v: float) -> tuple[int, int, int]:
    i = int(h * 6) % 6
    f = h * 6 - int(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    r, g, b = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]
    return int(r * 255), int(g * 255), int(b * 255)


@lru_cache(maxsize=512)
def country_style(iso_a3: str, continent: str) -> CountryStyle:
    """The look of a country, derived from a hash of its ISO code."""
    digest = hashlib.sha256(iso_a3.encode()).digest()
    rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
    grey = int(rng.choice([55, 85, 115, 140]))
    tint = rng.integers(-12, 13, 3)
    marking = [(245, 245, 245), (250, 200, 20), (240, 120, 30)][int(rng.integers(3))]
    hue = float(rng.random())
    return CountryStyle(
        asphalt=tuple(int(np.clip(grey + t, 0, 255)) for t in tint),
        marking=marking,
        pattern=MARKING_PATTERNS[int(rng.integers(len(MARKING_PATTERNS)))],
        edge_lines=bool(rng.random() < 0.5),
        buildings=tuple(_hsv_to_rgb((hue + rng.uniform(-0.08, 0.08)) % 1.0,
                                    rng.uniform(0.2, 0.7), rng.uniform(0.45, 0.95))
                        for _ in range(3)),
        sign=_hsv_to_rgb(float(rng.random()), 0.85, 0.9),
        sign_shape=SIGN_SHAPES.get(continent, "circle"),
        left_side=bool(rng.random() < 0.3),
        kerb=(_hsv_to_rgb(float(rng.random()), 0.9, 0.95),
              [(250, 250, 250), (30, 30, 30), (240, 200, 0)][int(rng.integers(3))]),
    )
