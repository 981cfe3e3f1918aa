"""Points on the sphere: one Earth radius, 3-D unit vectors, chord <-> great-circle distance.

One radius for all of geoscout: ``EARTH_RADIUS_KM = 6371.0``, the mean radius OSV-5M uses for
its distance metrics and GeoGuessr scores. Filters (dedup radius), splits (train/test
buffer), land (buffers, cell areas) and metrics then agree on what a kilometre is, and
reported distances compare with OSV-5M's. The chord between two unit vectors is a monotone
function of their great-circle distance, so a Euclidean KD-tree radius on unit vectors is
right everywhere, across the antimeridian and at the poles.
"""

from __future__ import annotations

import math

import numpy as np

EARTH_RADIUS_KM = 6371.0
KM_PER_DEG = EARTH_RADIUS_KM * math.pi / 180.0  # 111.19 km per degree of latitude


def unit_vectors(lat_deg, lon_deg) -> np.ndarray:
    """(N, 3) unit vectors for latitudes/longitudes in degrees."""
    lat = np.radians(np.asarray(lat_deg, dtype=np.float64))
    lon = np.radians(np.asarray(lon_deg, dtype=np.float64))
    cos_lat = np.cos(lat)
    return np.stack([cos_lat * np.cos(lon), cos_lat * np.sin(lon), np.sin(lat)], axis=-1)


def km_to_chord(km: float) -> float:
    """Euclidean distance between unit vectors ``km`` apart on the Earth's surface."""
    return 2.0 * np.sin(min(km / EARTH_RADIUS_KM, np.pi) / 2.0)


def chord_to_km(chord):
    """Great-circle distance in km of a chord between unit vectors (arrays too)."""
    return 2.0 * EARTH_RADIUS_KM * np.arcsin(np.clip(np.asarray(chord) / 2.0, 0.0, 1.0))


def haversine_km(lat1, lon1, lat2, lon2) -> np.ndarray:
    """Great-circle distance in km between points in degrees (broadcasting)."""
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dp, dl = p2 - p1, np.radians(np.asarray(lon2) - np.asarray(lon1))
    a = np.sin(dp / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))
