"""Country of a point: hand-checked points on borders, coasts and the antimeridian."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
import shapely

from geo_assets.admin import AdminIndex, country_index, country_probabilities

# (lat, lon, ISO A3) checked by hand on a map
INLAND = [
    (45.815, 15.982, "HRV"),    # Zagreb
    (48.573, 7.752, "FRA"),     # Strasbourg, 2 km west of the Rhine border
    (48.565, 7.815, "DEU"),     # Kehl, just east of it
    (35.681, 139.767, "JPN"),   # Tokyo station
    (-33.868, 151.209, "AUS"),  # Sydney
    (64.146, -21.942, "ISL"),   # Reykjavik
    (66.0, -175.0, "RUS"),      # Chukotka, west of the antimeridian in longitude terms
    (65.5, 179.5, "RUS"),       # Chukotka, east of it
    (-17.8, 178.0, "FJI"),      # Viti Levu
]
COASTAL_50M = [
    (42.640, 18.108, "HRV"),    # Dubrovnik old town on the shore
    (1.290, 103.851, "SGP"),    # Singapore, missing from the 1:110m outlines
    (-16.80, -179.95, "FJI"),   # Taveuni / Vanua Levu east of the antimeridian
]


def codes(index: AdminIndex, points) -> list[str]:
    return index.lookup([p[0] for p in points], [p[1] for p in points]).tolist()


def test_embedded_countries_inland_points():
    index = country_index(None)
    assert codes(index, INLAND) == [p[2] for p in INLAND]


def test_open_sea_has_no_country():
    index = country_index(None)
    assert codes(index, [(0.0, -30.0), (-40.0, -120.0), (30.0, 160.0)]) == ["", "", ""]


def test_natural_earth_50m_borders_and_coasts(shared_data):
    folder = shared_data("naturalearth")
    index = country_index(str(folder), "50m")
    assert "50m" in index.source
    assert codes(index, INLAND + COASTAL_50M) == [p[2] for p in INLAND + COASTAL_50M]


def test_coastal_search_crosses_the_antimeridian():
    # an island whose outline ends at +180; the point lies 3 km east of it, at lon -179.97
    island = shapely.box(179.5, -16.6, 180.0, -16.4)
    frame = gpd.GeoDataFrame({"iso_a3": ["ISL1"], "name": ["Island"]},
                             geometry=[island], crs=4326)
    index = AdminIndex.from_frame(frame, "iso_a3", "name", coast_km=10.0)
    lat, lon = [-16.5, -16.5, -16.5], [-179.97, -179.5, 180.0]
    assert index.lookup(lat, lon).tolist() == ["ISL1", "", "ISL1"]
    far = AdminIndex.from_frame(frame, "iso_a3", "name", coast_km=1.0)
    assert far.lookup([-16.5], [-179.97]).tolist() == [""]


def test_country_probabilities_sum_cells_per_country():
    probs = np.array([[0.5, 0.2, 0.3], [0.1, 0.1, 0.8]])
    out = country_probabilities(["HRV", "ITA", "HRV"], probs)
    assert out[0][0] == ("HRV", pytest.approx(0.8))
    assert out[1] == [("HRV", pytest.approx(0.9)), ("ITA", pytest.approx(0.1))]
