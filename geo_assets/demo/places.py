"""Where the demo world has coverage: countries, cities and climate bands.

Countries are the Natural Earth 1:110m admin-0 polygons embedded in pyogrio's wheel
(``geo_assets.naturalearth.embedded_countries``), so this works offline.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shapely

from geo_assets.naturalearth import embedded_countries

# Countries drawn per continent, in this order, for each preset (sums: demo 36, tiny 8).
CONTINENT_QUOTAS: dict[str, dict[str, int]] = {
    "demo": {"Europe": 9, "Asia": 8, "Africa": 7, "North America": 5,
             "South America": 5, "Oceania": 2},
    "tiny": {"Europe": 2, "Asia": 2, "Africa": 1, "North America": 1,
             "South America": 1, "Oceania": 1},
}

# Climate bands by absolute latitude (upper bounds, degrees).
CLIMATE_BANDS: tuple[str, ...] = ("tropical", "subtropical", "temperate", "cool", "polar")
CLIMATE_EDGES_DEG = np.array([15.0, 32.0, 46.0, 58.0])

MIN_COUNTRY_AREA_DEG2 = 4.0


@dataclass(frozen=True)
class DemoCountry:
    """A country with coverage and its city centres (lat, lon in degrees)."""

    iso_a3: str
    name: str
    continent: str
    city_lats: tuple[float, ...]
    city_lons: tuple[float, ...]


def climate_band(lat_deg) -> np.ndarray:
    """Index into ``CLIMATE_BANDS`` for each latitude (vectorised)."""
    return np.searchsorted(CLIMATE_EDGES_DEG, np.abs(np.asarray(lat_deg, dtype=float)))


def country_geometries() -> dict[str, shapely.Geometry]:
    """iso_a3 -> prepared polygon of every embedded country with a usable code."""
    gdf = embedded_countries()
    out = {}
    for iso, geom in zip(gdf["iso_a3"], gdf.geometry):
        if isinstance(iso, str) and iso != "-99" and iso not in out:
            shapely.prepare(geom)
            out[iso] = geom
    return out


def candidate_countries() -> dict[str, list[tuple[str, str]]]:
    """continent -> sorted [(iso_a3, name)] of countries big enough to hold cities."""
    gdf = embedded_countries()
    out: dict[str, list[tuple[str, str]]] = {}
    for iso, name, continent, geom in zip(gdf["iso_a3"], gdf["name"], gdf["continent"],
                                          gdf.geometry):
        if not isinstance(iso, str) or iso == "-99" or geom.area < MIN_COUNTRY_AREA_DEG2:
            continue
        out.setdefault(continent, []).append((iso, name))
    return {k: sorted(v) for k, v in out.items()}


def random_points_in(geom, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``n`` uniform random (lat, lon) points inside ``geom`` by vectorised rejection."""
    min_lon, min_lat, max_lon, max_lat = geom.bounds
    lats: list[np.ndarray] = []
    lons: list[np.ndarray] = []
    got = 0
    while got < n:
        lon = rng.uniform(min_lon, max_lon, 4 * n + 16)
        lat = rng.uniform(min_lat, max_lat, 4 * n + 16)
        inside = shapely.contains_xy(geom, lon, lat)
        lats.append(lat[inside])
        lons.append(lon[inside])
        got += int(inside.sum())
    return np.concatenate(lats)[:n], np.concatenate(lons)[:n]


def choose_countries(preset: str, rng: np.random.Generator) -> list[DemoCountry]:
    """Countries per continent quota, each with 2-4 city centres (more for big ones)."""
    geoms = country_geometries()
    candidates = candidate_countries()
    chosen = []
    for continent, quota in CONTINENT_QUOTAS[preset].items():
        pool = candidates[continent]
        picks = rng.choice(len(pool), size=min(quota, len(pool)), replace=False)
        for i in sorted(picks):
            iso, name = pool[i]
            geom = geoms[iso]
            n_cities = int(np.clip(2 + np.log10(geom.area), 2, 4))
            lats, lons = random_points_in(geom, n_cities, rng)
            chosen.append(DemoCountry(iso, name, continent, tuple(map(float, lats)),
                                      tuple(map(float, lons))))
    return chosen


def locate_countries(lat, lon, isos: list[str]) -> np.ndarray:
    """Index into ``isos`` of the country containing each point, -1 where none does."""
    geoms = country_geometries()
    lat = np.asarray(lat, dtype=float)
    lon = np.asarray(lon, dtype=float)
    out = np.full(lat.shape, -1, dtype=np.int64)
    for k, iso in enumerate(isos):
        todo = out < 0
        inside = shapely.contains_xy(geoms[iso], lon[todo], lat[todo])
        idx = np.flatnonzero(todo)[inside]
        out[idx] = k
    return out
