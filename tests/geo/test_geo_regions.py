"""Regions of interest: parsing, Antarctica, countries, GeoJSON, and errors naming the input."""

from __future__ import annotations

import json

import pytest
import shapely

from geo_assets import regions
from geo_assets.errors import InputError
from geo_assets.naturalearth import embedded_countries

ZAGREB, LJUBLJANA, VIENNA = (15.98, 45.81), (14.51, 46.06), (16.37, 48.21)


def test_world_leaves_out_antarctica_unless_asked():
    assert regions.parse_region("world").bounds == (-180.0, -60.0, 180.0, 90.0)
    assert regions.parse_region("world", include_antarctica=True).bounds[1] == -90.0


def test_bbox_parsed_and_cut_at_60_south():
    region = regions.parse_region("bbox:-70,-80,-50,-50")
    assert region.box == (-70.0, -60.0, -50.0, -50.0)
    assert regions.parse_region("bbox: 10, 40, 20, 50").box == (10.0, 40.0, 20.0, 50.0)


@pytest.mark.parametrize("spec, message", [
    ("bbox:20,40,10,50", "inverted"),
    ("bbox:10,50,20,40", "inverted"),
    ("bbox:10,40,20,95", "max_lat 95.0 is out of range"),
    ("bbox:-190,40,20,50", "min_lon -190.0 is out of range"),
    ("bbox:10,40,20", "four numbers"),
    ("bbox:a,b,c,d", "four numbers"),
    ("bbox:10,-89,20,-70", "Antarctica"),
    ("mars", "not understood"),
    ("", "not understood"),
])
def test_bad_bbox_or_spec_names_the_input(spec, message):
    with pytest.raises(InputError, match=message) as err:
        regions.parse_region(spec)
    assert repr(spec) in str(err.value)


def test_countries_by_code_and_name():
    region = regions.parse_region("countries:hrv, Slovenia", embedded_countries())
    assert region.geometry.contains(shapely.Point(ZAGREB))
    assert region.geometry.contains(shapely.Point(LJUBLJANA))
    assert not region.geometry.contains(shapely.Point(VIENNA))
    assert region.box is None


def test_countries_margin_widens_the_region():
    plain = regions.parse_region("countries:HRV", embedded_countries())
    wide = regions.parse_region("countries:HRV", embedded_countries(), margin_deg=0.2)
    assert wide.geometry.area > plain.geometry.area
    assert wide.geometry.covers(plain.geometry)


def test_unknown_country_names_it_and_suggests():
    with pytest.raises(InputError, match="unknown country 'Croatai'.*croatia"):
        regions.parse_region("countries:HRV,Croatai", embedded_countries())
    with pytest.raises(InputError, match="lists no country"):
        regions.parse_region("countries:", embedded_countries())


def test_antarctica_kept_when_listed():
    region = regions.parse_region("countries:ATA", embedded_countries())
    assert region.bounds[1] < -80
    cut = regions.parse_region("countries:ARG", embedded_countries())
    assert cut.bounds[1] >= -60


def test_geojson_region(tmp_path):
    polygon = {"type": "Polygon",
               "coordinates": [[[13, 42], [20, 42], [20, 47], [13, 47], [13, 42]]]}
    path = tmp_path / "croatia.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {}, "geometry": polygon}]}))
    region = regions.parse_region(f"geojson:{path}")
    assert region.geometry.contains(shapely.Point(ZAGREB))
    assert region.spec == f"geojson:{path}"


OUT_OF_RANGE = '{"type": "Polygon", "coordinates": [[[0, 0], [400, 0], [400, 1], [0, 0]]]}'


@pytest.mark.parametrize("content", [None, "{not json", '{"type": "Point", "coordinates": [1, 2]}',
                                     OUT_OF_RANGE])
def test_unreadable_geojson_names_the_file(tmp_path, content):
    path = tmp_path / "region.geojson"
    if content is not None:
        path.write_text(content)
    with pytest.raises(InputError, match="region GeoJSON") as err:
        regions.parse_region(f"geojson:{path}")
    assert str(path) in str(err.value)
