"""Country (admin-0) and region (admin-1) of points, with OSV-5M's conventions.

A point takes the country whose Natural Earth polygon contains it (vectorised point in polygon
over a shapely ``STRtree``); a point in no polygon (at sea, or on a coast that the generalised
outline cuts off) takes the nearest country when its boundary is within ``coast_km``, else no
country (``""``). Polygons are split at the antimeridian in Natural Earth, and the nearest
search also looks across it, so Fiji and Chukotka work on both sides of +-180 degrees.

Sources: 1:50m admin-0 countries from a local Natural Earth folder (the ``natural_earth_dir``
setting) when it holds them, else the embedded 1:110m countries (coarse coastlines: small
islands fall back on the coastal search). Admin-1 regions only when a folder holds
``ne_<scale>_admin_1_states_provinces.*``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import geopandas as gpd
import numpy as np
import shapely

from geo_assets.naturalearth import (
    EMBEDDED,
    LOCAL_SUFFIXES,
    NaturalEarthSource,
    embedded_countries,
    read_vector,
)
from geo_assets.sphere import EARTH_RADIUS_KM

COAST_KM = 10.0  # OSV-5M-style tolerance for coastal points outside the generalised outline
NO_COUNTRY = ""
KM_PER_DEG = np.pi * EARTH_RADIUS_KM / 180.0


@dataclass(frozen=True)
class AdminIndex:
    """Polygons with a code and a name each, and a spatial index over them."""

    codes: np.ndarray  # object array of codes (ISO A3 for countries)
    names: np.ndarray
    geoms: np.ndarray
    tree: shapely.STRtree
    coast_km: float = COAST_KM
    source: str = ""

    @classmethod
    def from_frame(cls, frame: gpd.GeoDataFrame, code: str, name: str,
                   coast_km: float = COAST_KM, source: str = "") -> AdminIndex:
        geoms = shapely.make_valid(np.asarray(frame.geometry.values, dtype=object))
        return cls(np.asarray(frame[code].astype(str), dtype=object),
                   np.asarray(frame[name].astype(str), dtype=object), geoms,
                   shapely.STRtree(geoms), coast_km, source)

    def lookup(self, lat_deg, lon_deg) -> np.ndarray:
        """Code per point (``""`` when none is within ``coast_km``)."""
        index = self.lookup_index(lat_deg, lon_deg)
        return np.where(index >= 0, self.codes[np.maximum(index, 0)], NO_COUNTRY)

    def name_of(self, codes) -> list[str]:
        names = dict(zip(self.codes.tolist(), self.names.tolist()))
        return [names.get(c, NO_COUNTRY) for c in codes]

    def lookup_index(self, lat_deg, lon_deg) -> np.ndarray:
        """Polygon row per point, -1 when none."""
        lat = np.atleast_1d(np.asarray(lat_deg, dtype=np.float64))
        lon = ((np.atleast_1d(np.asarray(lon_deg, dtype=np.float64)) + 180.0) % 360.0) - 180.0
        points = shapely.points(lon, lat)
        out = np.full(len(points), -1, dtype=np.int64)
        hit_point, hit_geom = self.tree.query(points, predicate="intersects")
        # several polygons may touch a point on a border: keep the first per point
        first = np.unique(hit_point, return_index=True)[1]
        out[hit_point[first]] = hit_geom[first]
        missing = np.flatnonzero(out < 0)
        if len(missing) and self.coast_km > 0:
            out[missing] = self._nearest_within(lat[missing], lon[missing])
        return out

    def _nearest_within(self, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
        """Nearest polygon within ``coast_km`` of each point, also across the antimeridian."""
        # degrees of longitude shrink with latitude: search a box wide enough, then measure
        reach = self.coast_km / KM_PER_DEG / np.maximum(np.cos(np.radians(lat)), 0.05)
        targets, polys, dists = [], [], []
        for shift in (0.0, -360.0, 360.0):
            shifted = lon + shift
            rows = np.flatnonzero((shifted >= -180.0 - reach) & (shifted <= 180.0 + reach))
            if not len(rows):
                continue
            points = shapely.points(shifted[rows], lat[rows])
            p_idx, g_idx = self.tree.query_nearest(points, max_distance=float(reach[rows].max()))
            line = shapely.shortest_line(points[p_idx], self.geoms[g_idx])
            coords = shapely.get_coordinates(shapely.get_point(line, 1))
            targets.append(rows[p_idx])
            polys.append(g_idx)
            dists.append(haversine_np(lat[rows][p_idx], shifted[rows][p_idx],
                                      coords[:, 1], coords[:, 0]))
        best = np.full(len(lat), -1, dtype=np.int64)
        if not targets:
            return best
        target, poly, km = (np.concatenate(x) for x in (targets, polys, dists))
        order = np.lexsort((km, target))  # nearest first within each point
        target, poly, km = target[order], poly[order], km[order]
        first = np.unique(target, return_index=True)[1]
        close = km[first] <= self.coast_km
        best[target[first][close]] = poly[first][close]
        return best


def haversine_np(lat1, lon1, lat2, lon2) -> np.ndarray:
    lat1, lon1, lat2, lon2 = (np.radians(np.asarray(x, dtype=np.float64))
                              for x in (lat1, lon1, lat2, lon2))
    a = np.sin((lat2 - lat1) / 2) ** 2 + np.cos(lat1) * np.cos(lat2) * np.sin((lon2 - lon1) / 2) ** 2
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))


def is_folder(location: str | None) -> bool:
    return bool(location) and location not in (EMBEDDED, "download") and Path(location).is_dir()


@lru_cache(maxsize=4)
def country_index(natural_earth_dir: str | None = None, scale: str = "50m",
                  coast_km: float = COAST_KM) -> AdminIndex:
    """Admin-0 countries: 1:``scale`` (or coarser) from a local folder, else embedded 1:110m."""
    if is_folder(natural_earth_dir):
        source = NaturalEarthSource(natural_earth_dir)
        frame = source.countries_for_region(scale)
        return AdminIndex.from_frame(frame, "iso_a3", "name", coast_km,
                                     frame.attrs.get("source", str(natural_earth_dir)))
    return AdminIndex.from_frame(embedded_countries(), "iso_a3", "name", coast_km,
                                 "embedded Natural Earth 1:110m countries")


@lru_cache(maxsize=4)
def region_index(natural_earth_dir: str | None, scale: str = "10m",
                 coast_km: float = COAST_KM) -> AdminIndex | None:
    """Admin-1 regions when the folder holds ``ne_<scale>_admin_1_states_provinces``; else None."""
    if not is_folder(natural_earth_dir):
        return None
    for s in dict.fromkeys((scale, "10m", "50m")):
        for suffix in LOCAL_SUFFIXES:
            path = Path(natural_earth_dir) / f"ne_{s}_admin_1_states_provinces{suffix}"
            if path.is_file():
                frame = read_vector(path).to_crs(4326)
                frame.columns = [c.lower() if c != "geometry" else c for c in frame.columns]
                frame = frame.set_geometry("geometry")
                code = "iso_3166_2" if "iso_3166_2" in frame else "adm1_code"
                return AdminIndex.from_frame(frame, code, "name", coast_km, str(path))
    return None


def country_probabilities(codes, probs: np.ndarray) -> list[list[tuple[str, float]]]:
    """Per row of ``probs`` (N, C) over cells whose countries are ``codes`` (C,): countries with
    their summed probability, most probable first (``""``: cells in no country)."""
    codes = np.asarray(codes, dtype=object)
    unique, inverse = np.unique(codes.astype(str), return_inverse=True)
    summed = np.zeros((probs.shape[0], len(unique)))
    np.add.at(summed.T, inverse, np.asarray(probs, dtype=np.float64).T)
    order = np.argsort(-summed, axis=1)
    return [[(str(unique[j]), float(summed[n, j])) for j in order[n] if summed[n, j] > 0]
            for n in range(len(summed))]
