"""The region of interest: the world, a bounding box, a list of countries or a GeoJSON polygon.

Antarctica is left out unless asked for: every region is cut at 60 degrees south (the
Antarctic Treaty limit; no other land lies south of it) unless ``include_antarctica`` is set
or the country list names Antarctica itself.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import shapely
from shapely.geometry.base import BaseGeometry

from geo_assets.errors import InputError

ANTARCTIC_LAT = -60.0
ANTARCTICA_CODES = {"ATA"}
SPEC_HELP = ("use 'world', 'bbox:minlon,minlat,maxlon,maxlat', 'countries:HRV,SVN' "
             "(ISO A3 codes or names) or 'geojson:/path/to/polygon.geojson'")


@dataclass(frozen=True)
class Region:
    """A region as a lon/lat (EPSG:4326) polygonal geometry. ``box`` is set when the region
    is an axis-aligned rectangle, which lets land be clipped with fast rectangle clipping."""

    spec: str
    geometry: BaseGeometry
    box: tuple[float, float, float, float] | None = None

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        return self.box or tuple(shapely.bounds(self.geometry).tolist())


def _south(include_antarctica: bool) -> float:
    return -90.0 if include_antarctica else ANTARCTIC_LAT


def world(include_antarctica: bool = False) -> Region:
    box = (-180.0, _south(include_antarctica), 180.0, 90.0)
    return Region("world", shapely.box(*box), box)


def bbox(min_lon: float, min_lat: float, max_lon: float, max_lat: float,
         include_antarctica: bool = False, spec: str | None = None) -> Region:
    """A lon/lat box; errors name the box and the value at fault."""
    spec = spec or f"bbox:{min_lon},{min_lat},{max_lon},{max_lat}"
    for name, value, limit in (("min_lon", min_lon, 180), ("max_lon", max_lon, 180),
                               ("min_lat", min_lat, 90), ("max_lat", max_lat, 90)):
        if not np.isfinite(value) or abs(value) > limit:
            kind = "longitude" if "lon" in name else "latitude"
            raise InputError(f"region {spec!r}: {name} {value} is out of range "
                             f"({kind} must lie in -{limit}..{limit})")
    if min_lon >= max_lon or min_lat >= max_lat:
        raise InputError(f"region {spec!r}: inverted or empty bbox, min must be below max "
                         "(bbox:minlon,minlat,maxlon,maxlat)")
    south = max(min_lat, _south(include_antarctica))
    if south >= max_lat:
        raise InputError(f"region {spec!r} lies in Antarctica: set include_antarctica to use it")
    box = (float(min_lon), float(south), float(max_lon), float(max_lat))
    return Region(spec, shapely.box(*box), box)


def find_countries(names: list[str], countries: gpd.GeoDataFrame) -> np.ndarray:
    """Row indices of ``countries`` matching ISO A3 codes or names (case-insensitive)."""
    columns = [c for c in ("iso_a3", "name", "name_long", "admin") if c in countries]
    lookup: dict[str, int] = {}
    for col in reversed(columns):  # iso_a3 wins over names
        for i, value in enumerate(countries[col].astype(str)):
            lookup[value.strip().lower()] = i
    rows = []
    for name in names:
        key = name.strip().lower()
        if key not in lookup:
            close = difflib.get_close_matches(key, list(lookup), n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise InputError(f"unknown country {name!r} in region: use an ISO A3 code or a "
                             f"Natural Earth country name{hint}")
        rows.append(lookup[key])
    return np.array(sorted(set(rows)), dtype=np.int64)


def countries_region(names: list[str], countries: gpd.GeoDataFrame,
                     include_antarctica: bool = False, margin_deg: float = 0.0) -> Region:
    """Union of the named countries. ``margin_deg`` widens it a little, so that finer land
    polygons than the countries' own (1:10m land, 1:110m countries) are not cut off."""
    names = [n for n in names if n.strip()]
    if not names:
        raise InputError("region 'countries:' lists no country: e.g. countries:HRV,SVN")
    picked = countries.iloc[find_countries(names, countries)]
    geom = shapely.union_all(shapely.make_valid(picked.geometry.values))
    if margin_deg > 0:
        geom = shapely.buffer(geom, margin_deg)
    asked = set(picked["iso_a3"]) & ANTARCTICA_CODES
    if not (include_antarctica or asked):
        geom = shapely.clip_by_rect(geom, -180, ANTARCTIC_LAT, 180, 90)
    return Region(f"countries:{','.join(names)}", geom)


def read_geojson_geometry(path: str | Path) -> BaseGeometry:
    """Union of the polygons in a GeoJSON file (FeatureCollection, Feature or geometry)."""
    try:
        doc = json.loads(Path(path).read_text())
        if doc.get("type") == "FeatureCollection":
            shapes = [shapely.geometry.shape(f["geometry"]) for f in doc["features"]]
        elif doc.get("type") == "Feature":
            shapes = [shapely.geometry.shape(doc["geometry"])]
        else:
            shapes = [shapely.geometry.shape(doc)]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise InputError(f"cannot read region GeoJSON {str(path)!r}: {exc}") from exc
    geom = shapely.union_all(shapely.make_valid(np.array(shapes, dtype=object)))
    if geom.is_empty or geom.area <= 0:
        raise InputError(f"region GeoJSON {str(path)!r} holds no polygon")
    min_lon, min_lat, max_lon, max_lat = geom.bounds
    if min_lon < -180 or max_lon > 180 or min_lat < -90 or max_lat > 90:
        raise InputError(f"region GeoJSON {str(path)!r} has coordinates outside lon -180..180 "
                         "/ lat -90..90 (it must be in EPSG:4326 degrees)")
    return geom


def geojson_region(path: str | Path, include_antarctica: bool = False) -> Region:
    geom = read_geojson_geometry(path)
    if not include_antarctica:
        geom = shapely.clip_by_rect(geom, -180, ANTARCTIC_LAT, 180, 90)
        if geom.is_empty:
            raise InputError(f"region GeoJSON {str(path)!r} lies in Antarctica: set "
                             "include_antarctica to use it")
    return Region(f"geojson:{path}", geom)


def parse_region(spec: str, countries: gpd.GeoDataFrame | None = None,
                 include_antarctica: bool = False, margin_deg: float = 0.0) -> Region:
    """Parse the ``region`` setting; ``countries`` is needed only for ``countries:``."""
    kind, _, arg = (spec or "").strip().partition(":")
    kind = kind.strip().lower()
    if kind == "world" and not arg:
        return world(include_antarctica)
    if kind == "bbox":
        try:
            values = [float(v) for v in arg.split(",")]
        except ValueError:
            values = []
        if len(values) != 4:
            raise InputError(f"region {spec!r}: bbox needs four numbers, "
                             "bbox:minlon,minlat,maxlon,maxlat")
        return bbox(*values, include_antarctica=include_antarctica, spec=spec)
    if kind == "countries":
        if countries is None:
            raise InputError(f"region {spec!r} needs the countries data")
        return countries_region(arg.split(","), countries, include_antarctica, margin_deg)
    if kind == "geojson" and arg:
        return geojson_region(arg.strip(), include_antarctica)
    raise InputError(f"region {spec!r} is not understood: {SPEC_HELP}")


def needs_countries(spec: str) -> bool:
    return (spec or "").strip().lower().startswith("countries:")
