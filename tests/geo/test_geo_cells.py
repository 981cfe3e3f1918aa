"""Property tests of the quadtree cell maths: ids, bounds, point lookup and topology."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geo_assets import cells
from geo_assets.errors import InputError

levels = st.integers(min_value=0, max_value=cells.MAX_LEVEL)
ids = levels.flatmap(lambda n: st.text(alphabet="0123", min_size=n, max_size=n))
deep_ids = st.integers(1, 12).flatmap(lambda n: st.text(alphabet="0123", min_size=n, max_size=n))
# polar cells have a whole row of neighbours: keep those levels small
shallow_ids = st.integers(1, 6).flatmap(
    lambda n: st.text(alphabet="0123", min_size=n, max_size=n))


def edge_values(limit: float) -> st.SearchStrategy[float]:
    """Cell edges at random levels, the limits themselves, and values a hair off them."""
    def edge(level_and_k):
        level, k = level_and_k
        return -limit + k * (2 * limit) / 2**level

    on_edge = st.tuples(st.integers(0, cells.MAX_LEVEL), st.integers(0, 2**24)).map(
        lambda lk: edge((lk[0], lk[1] % (2 ** lk[0] + 1))))
    near = on_edge.flatmap(lambda x: st.sampled_from(
        [x, math.nextafter(x, -math.inf), math.nextafter(x, math.inf), x - 1e-17, x + 1e-12]))
    return st.one_of(near, st.sampled_from([-limit, limit, 0.0, -0.0]),
                     st.floats(-limit, limit)).map(lambda v: min(max(v, -limit), limit))


# timing on a shared 2-core machine says nothing about the code
NO_DEADLINE = settings(deadline=None)
lats = edge_values(90.0)
lons = edge_values(180.0)


@NO_DEADLINE
@given(ids)
def test_id_rowcol_round_trip(cell_id):
    level, row, col = cells.id_to_rowcol(cell_id)
    assert cells.rowcol_to_id(level, row, col) == cell_id
    vec = cells.ids_to_rowcol([cell_id])
    assert (vec[0][0], vec[1][0], vec[2][0]) == (level, row, col)
    assert cells.rowcol_to_ids(level, np.array([row]), np.array([col]))[0] == cell_id


@NO_DEADLINE
@given(ids)
def test_id_bounds_round_trip(cell_id):
    """The cell holding a box's centre is the box's cell, and the bounds have the level's size."""
    min_lon, min_lat, max_lon, max_lat = cells.cell_bounds(cell_id)
    dlat, dlon = cells.cell_size_deg(len(cell_id))
    assert max_lat - min_lat == pytest.approx(dlat) and max_lon - min_lon == pytest.approx(dlon)
    lat, lon = cells.cell_center(cell_id)
    assert cells.point_to_cell(lat, lon, len(cell_id)) == cell_id
    assert cells.point_to_cell(min_lat, min_lon, len(cell_id)) == cell_id  # SW corner inside
    assert np.array_equal(cells.cells_bounds([cell_id])[0], [min_lon, min_lat, max_lon, max_lat])


@settings(max_examples=300, deadline=None)
@given(lats, lons, st.integers(0, cells.MAX_LEVEL))
def test_point_lies_in_its_cells_bounds(lat, lon, level):
    cell_id = cells.point_to_cell(lat, lon, level)
    assert len(cell_id) == level
    min_lon, min_lat, max_lon, max_lat = cells.cells_bounds([cell_id])[0]
    assert min_lat <= lat < max_lat or (lat == 90.0 and max_lat == 90.0)
    assert min_lon <= lon < max_lon or (lon == 180.0 and min_lon == -180.0)


@NO_DEADLINE
@given(st.lists(st.tuples(lats, lons), min_size=1, max_size=50), st.integers(0, 16))
def test_vectorised_lookup_equals_scalar(points, level):
    lat, lon = np.array(points).T
    vec = cells.points_to_cells(lat, lon, level)
    assert list(vec) == [cells.point_to_cell(a, b, level) for a, b in points]


def test_poles_and_antimeridian():
    assert cells.point_to_cell(90.0, 0.0, 2) == "32"
    assert cells.point_to_cell(-90.0, -180.0, 3) == "000"
    assert cells.point_to_cell(10.0, 180.0, 4) == cells.point_to_cell(10.0, -180.0, 4)
    assert cells.point_to_cell(-1e-300, -1e-300, 1) == "0"


@NO_DEADLINE
@given(deep_ids)
def test_parent_children_consistent(cell_id):
    assert all(cells.parent(c) == cell_id for c in cells.children(cell_id))
    assert cells.parent(cell_id) == cell_id[:-1] == cells.ancestor(cell_id, len(cell_id) - 1)
    kids = cells.cells_bounds(cells.children(cell_id))
    box = cells.cell_bounds(cell_id)
    assert kids[:, 0].min() == box[0] and kids[:, 1].min() == box[1]
    assert kids[:, 2].max() == box[2] and kids[:, 3].max() == box[3]
    area = ((kids[:, 2] - kids[:, 0]) * (kids[:, 3] - kids[:, 1])).sum()
    assert area == pytest.approx((box[2] - box[0]) * (box[3] - box[1]))
    lat, lon = cells.cell_center(cell_id + "2")
    assert cells.point_to_cell(lat, lon, len(cell_id)) == cell_id


def _touch(a, b) -> bool:
    """Boxes share an edge or corner, on a globe (longitude wraps; polar rows meet at the pole)."""
    lat_ok = a[1] <= b[3] and b[1] <= a[3]
    lon_ok = any(a[0] <= b[2] + s and b[0] + s <= a[2] for s in (-360, 0, 360))
    pole = (a[3] == b[3] == 90) or (a[1] == b[1] == -90)
    return lat_ok and (lon_ok or pole)


@NO_DEADLINE
@given(shallow_ids)
def test_neighbours_symmetric_and_touching(cell_id):
    level, row, _ = cells.id_to_rowcol(cell_id)
    found = cells.neighbours(cell_id)
    assert cell_id not in found and len(set(found)) == len(found)
    assert all(len(n) == level for n in found)
    box = cells.cell_bounds(cell_id)
    for other in found:
        assert cell_id in cells.neighbours(other)
        assert _touch(box, cells.cell_bounds(other))
    if level >= 2 and 0 < row < 2**level - 1:
        assert len(found) == 8


def test_descendants_and_all_cells():
    assert cells.descendants("03", 3) == ["030", "031", "032", "033"]
    assert sorted(cells.all_cells(2)) == sorted(cells.descendants("", 2))
    assert len(cells.all_cells(5)) == 4**5


@pytest.mark.parametrize("bad", [-1, cells.MAX_LEVEL + 1, 1.5, True, "3"])
def test_unknown_level_is_refused(bad):
    with pytest.raises(InputError, match="level"):
        cells.points_to_cells([0.0], [0.0], bad)


@pytest.mark.parametrize("bad", ["04", "x", "1.2", 3])
def test_bad_cell_id_is_refused(bad):
    with pytest.raises(InputError, match="cell id"):
        cells.id_to_rowcol(bad)


def test_bad_coordinates_are_refused():
    with pytest.raises(InputError, match="latitude 91"):
        cells.points_to_cells([91.0], [0.0], 3)
    with pytest.raises(InputError, match="longitude -181"):
        cells.points_to_cells([0.0], [-181.0], 3)
    with pytest.raises(InputError, match="row index"):
        cells.rowcol_to_ids(2, np.array([4]), np.array([0]))
    with pytest.raises(InputError, match="ancestor"):
        cells.ancestor("0123", 5)
