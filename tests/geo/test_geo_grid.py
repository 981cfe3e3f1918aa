"""The recursive land grid against an independent brute force: every cell of a level, one
shapely ``intersects`` per cell, on the same polygons."""

from __future__ import annotations

import math

import numpy as np
import pytest
import shapely

from geo_assets import cells, grid, regions
from geo_assets.errors import DataUnavailableError, InputError
from geo_assets.naturalearth import NaturalEarthSource, embedded_land
from geo_assets.sphere import EARTH_RADIUS_KM, KM_PER_DEG


def brute_force(land_geom, level: int, buffer_km: float = 0.0) -> set[str]:
    """Cells whose box (widened by the buffer, wrapping at +-180) intersects the land."""
    found = set()
    for cell_id in cells.all_cells(level):
        x0, y0, x1, y1 = cells.cell_bounds(cell_id)
        boxes = [shapely.box(x0, y0, x1, y1)]
        if buffer_km:
            dlat = buffer_km / KM_PER_DEG
            edge = min(max(abs(y0), abs(y1)) + dlat, 90.0)
            dlon = min(dlat / max(math.cos(math.radians(edge)), 1e-9), 360.0)
            y0, y1 = max(y0 - dlat, -90), min(y1 + dlat, 90)
            boxes = [shapely.box(x0 - dlon + s, y0, x1 + dlon + s, y1) for s in (-360, 0, 360)]
        if any(land_geom.intersects(b) for b in boxes):
            found.add(cell_id)
    return found


def region_land(land, region) -> shapely.Geometry:
    """The land inside the region, by a general intersection (not the grid's clipping)."""
    return shapely.intersection(shapely.union_all(land.geometry.values), region.geometry)


def assert_matches_brute_force(land, region, max_level: int, buffer_km: float = 0.0):
    result = grid.build_grid(land, max_level, buffer_km, region)
    land_geom = region_land(land, region)
    for level in range(1, max_level + 1):
        built = set(result.cells.loc[result.cells["level"] == level, "cell_id"])
        assert built == brute_force(land_geom, level, buffer_km), f"level {level}"
    return result


def test_world_land_cells_equal_brute_force_embedded():
    result = assert_matches_brute_force(embedded_land(), regions.world(), 5)
    counts = result.counts().set_index("level")["land"].tolist()
    assert counts == [4, 15, 46, 137, 423]  # embedded 1:110m countries, Antarctica left out


def test_world_land_cells_equal_brute_force_50m(shared_data):
    land = NaturalEarthSource(str(shared_data("naturalearth"))).land("50m")
    assert_matches_brute_force(land, regions.world(), 5)


def test_coastal_buffer_cells_equal_brute_force():
    result = assert_matches_brute_force(embedded_land(), regions.world(), 4, buffer_km=300)
    assert (result.cells["status"] == grid.COASTAL).any()
    coastal = result.cells[result.cells["status"] == grid.COASTAL]
    assert (coastal["land_fraction"] == 0).all()


def test_region_cells_equal_brute_force():
    assert_matches_brute_force(embedded_land(), regions.parse_region("bbox:-12.3,35.1,31.7,61.9"),
                               5, buffer_km=50)
    countries = NaturalEarthSource().countries("110m")
    assert_matches_brute_force(embedded_land(),
                               regions.parse_region("countries:HRV,SVN", countries), 5)


def test_land_fraction_equals_area_share():
    land = embedded_land()
    result = grid.build_grid(land, 4, 0.0, regions.world())
    geom = region_land(land, regions.world())
    level3 = result.cells[result.cells["level"] == 3]
    expected = [geom.intersection(g).area / g.area for g in level3.geometry]
    assert level3["land_fraction"].to_numpy() == pytest.approx(expected, abs=1e-9)
    assert (level3["land_fraction"] > 0).all()


def test_contract_columns_and_tree_shape():
    result = grid.build_grid(embedded_land(), 4, 10.0, regions.world())
    table = result.cells
    assert list(table.columns) == grid.COLUMNS and table.crs.to_epsg() == 4326
    assert (table["cell_id"].str.len() == table["level"]).all()
    assert np.allclose(table[["min_lon", "min_lat", "max_lon", "max_lat"]].to_numpy(),
                       cells.cells_bounds(table["cell_id"].to_numpy()))
    assert np.allclose(shapely.bounds(table.geometry.values),
                       table[["min_lon", "min_lat", "max_lon", "max_lat"]].to_numpy())
    # children are made only from kept cells, and every kept cell's parent is kept
    kept = set(table["cell_id"])
    assert all(c[:-1] in kept for c in kept if len(c) > 1)
    assert all(c[:-1] in kept for c in result.dropped["cell_id"] if len(c) > 1)
    assert not kept & set(result.dropped["cell_id"])
    level1 = table[table["level"] == 1]["area_km2"]
    assert level1.sum() == pytest.approx(4 * math.pi * EARTH_RADIUS_KM**2, rel=1e-9)  # all 4 kept
    for level, frame in table.groupby("level"):  # rows in id order within each level
        assert list(frame["cell_id"]) == sorted(frame["cell_id"])


def test_empty_region_gives_an_empty_grid():
    result = grid.build_grid(embedded_land(), 3, 0.0, regions.parse_region("bbox:-30,-40,-20,-30"))
    assert len(result.cells) == 0
    assert result.counts()["kept"].tolist() == [0, 0, 0]


def test_write_load_and_crawl_cells(data_root):
    result = grid.build_grid(embedded_land(), 3, 0.0, regions.world())
    grid.write_grid(result.cells, data_root)
    loaded = grid.load_grid(data_root)
    assert list(loaded.columns) == grid.COLUMNS and len(loaded) == len(result.cells)
    crawl = grid.crawl_cells(loaded, 3)
    assert crawl == sorted(crawl) and all(len(c) == 3 for c in crawl)
    assert len(crawl) == (result.cells["level"] == 3).sum()
    with pytest.raises(InputError, match="crawl_level 4 is not in the grid"):
        grid.crawl_cells(loaded, 4)


def test_missing_grid_says_what_to_do(data_root):
    with pytest.raises(DataUnavailableError, match="materialize the grid_cells asset"):
        grid.load_grid(data_root)


@pytest.mark.parametrize("level", [0, -1, 25, 2.5, "6"])
def test_unknown_level_names_the_setting(level):
    with pytest.raises(InputError, match="grid_max_level"):
        grid.build_grid(embedded_land(), level)


def test_negative_buffer_is_refused():
    with pytest.raises(InputError, match="coastal_buffer_km -1"):
        grid.build_grid(embedded_land(), 2, -1.0)
