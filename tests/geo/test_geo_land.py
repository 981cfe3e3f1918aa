"""Vectorised land queries checked against plain per-item shapely."""

from __future__ import annotations

import math

import numpy as np
import pytest
import shapely

from geo_assets import land, regions
from geo_assets.naturalearth import embedded_countries, embedded_land
from geo_assets.sphere import EARTH_RADIUS_KM

CITIES = {"HRV": (45.81, 15.98), "FRA": (48.86, 2.35), "NOR": (59.91, 10.75),
          "BRA": (-15.79, -47.88), "JPN": (35.68, 139.69)}


def test_countries_at_cities_and_sea():
    lat, lon = np.array(list(CITIES.values())).T
    lat = np.append(lat, [0.0, 43.3])  # Gulf of Guinea; Adriatic off Split, ~10 km out
    lon = np.append(lon, [-20.0, 16.2])
    found = land.countries_at(lat, lon, embedded_countries())
    assert list(found[:5]) == list(CITIES) and found[5] is None
    near = land.countries_at(lat, lon, embedded_countries(), max_distance_km=60)
    assert near[5] is None and near[6] == "HRV"


def test_points_on_land_and_buffer():
    index = land.LandIndex(land.land_parts(embedded_land()))
    lat = np.array([45.81, 0.0, 43.3])
    lon = np.array([15.98, -20.0, 16.2])
    assert list(land.points_on_land(lat, lon, index)) == [True, False, False]
    assert list(land.points_on_land(lat, lon, index, buffer_km=60)) == [True, False, True]


def test_fraction_matches_per_box_intersection():
    parts = land.land_parts(embedded_land())
    union = shapely.union_all(parts)
    rng = np.random.default_rng(7)
    lo = np.column_stack([rng.uniform(-180, 170, 200), rng.uniform(-80, 70, 200)])
    bounds = np.column_stack([lo, lo + rng.uniform(0.5, 10, (200, 2))])
    expected = [union.intersection(shapely.box(*b)).area / shapely.box(*b).area for b in bounds]
    assert land.LandIndex(parts).fraction(bounds) == pytest.approx(expected, abs=1e-9)


def test_expand_boxes_by_km():
    box = np.array([[10.0, 0.0, 11.0, 1.0], [10.0, 59.0, 11.0, 60.0]])
    wide = land.expand_boxes(box, land.KM_PER_DEG)  # one degree of latitude
    # east-west degrees taken at the widened box's poleward edge (2 and 61 degrees)
    dlon = 1 / math.cos(math.radians(2))
    assert wide[0] == pytest.approx([10 - dlon, -1, 11 + dlon, 2])
    assert wide[1][0] == pytest.approx(10 - 1 / math.cos(math.radians(61)))
    assert land.expand_boxes(np.array([[0.0, 85.0, 1.0, 90.0]]), 500)[0][3] == 90.0


def test_near_wraps_the_antimeridian():
    index = land.LandIndex(np.array([shapely.box(-180, 0, -179.9, 1)]))
    east_edge = np.array([[179.0, 0.0, 179.99, 1.0]])
    assert index.near(east_edge, 10.0)[0]
    assert not index.intersects(east_edge)[0]


def test_area_of_the_whole_world():
    world = np.array([[-180.0, -90.0, 180.0, 90.0]])
    assert land.boxes_area_km2(world)[0] == pytest.approx(4 * math.pi * EARTH_RADIUS_KM**2)


def test_clip_to_region_box_equals_intersection():
    parts = land.land_parts(embedded_land())
    region = regions.parse_region("bbox:-10,35,30,60")
    clipped = land.clip_to_region(parts, region)
    exact = shapely.intersection(shapely.union_all(parts), region.geometry).area
    assert shapely.union_all(clipped).area == pytest.approx(exact, rel=1e-9)
    assert shapely.total_bounds(clipped)[1] >= 35


def test_land_round_trip(data_root):
    parts = land.land_parts(embedded_land())
    land.write_land(parts, data_root)
    back = land.load_land(data_root)
    assert len(back) == len(parts) and back.crs.to_epsg() == 4326
