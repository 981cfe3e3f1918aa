"""Mapillary listing logic with a stub client: boxes under the size limit, splitting boxes
that hit the 2000 cap, spreading the sample over the cell, and the coverage-tile path."""

from __future__ import annotations

import numpy as np

from geo_assets.cells import cell_bounds
from geo_assets.clients.base import ListRequest
from geo_assets.clients.mapillary import SEARCH_CAP, MapillarySource, search_boxes
from geo_assets.settings import MapillarySettings

CELL = "0312301203"  # level 10: 0.18 x 0.35 degrees


class StubClient:
    """Answers bbox searches from a fixed point set, capped like the real API."""

    def __init__(self, lon: np.ndarray, lat: np.ndarray, **settings) -> None:
        self.lon, self.lat = lon, lat
        self.settings = MapillarySettings(use_coverage_tiles=False, **settings)
        self.token = "t"
        self.boxes: list[tuple] = []

    def search(self, bbox, limit: int = SEARCH_CAP) -> list[dict]:
        x0, y0, x1, y1 = bbox
        assert x1 - x0 < 0.01 and y1 - y0 < 0.01  # the API's size limit
        self.boxes.append(bbox)
        inside = np.flatnonzero((self.lon >= x0) & (self.lon < x1)
                                & (self.lat >= y0) & (self.lat < y1))[:limit]
        return [{"id": str(i), "geometry": {"coordinates": [self.lon[i], self.lat[i]]},
                 "sequence": f"s{i // 10}", "captured_at": 1_600_000_000_000 + int(i)}
                for i in inside]


def uniform(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    x0, y0, x1, y1 = cell_bounds(CELL)
    rng = np.random.default_rng(seed)
    return rng.uniform(x0, x1, n), rng.uniform(y0, y1, n)


def test_boxes_tile_the_cell_under_the_limit():
    boxes = search_boxes(cell_bounds(CELL), 0.0099)
    assert (boxes[:, 2] - boxes[:, 0]).max() < 0.01 and (boxes[:, 3] - boxes[:, 1]).max() < 0.01
    area = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).sum()
    x0, y0, x1, y1 = cell_bounds(CELL)
    assert np.isclose(area, (x1 - x0) * (y1 - y0))


def test_a_box_at_the_cap_is_split_until_everything_is_found():
    x0, y0, _, _ = cell_bounds(CELL)
    rng = np.random.default_rng(1)
    lon = x0 + rng.uniform(0.0001, 0.0098, 5000)  # 5000 images inside one search box
    lat = y0 + rng.uniform(0.0001, 0.0098, 5000)
    client = StubClient(lon, lat, max_search_requests=2000)
    found = MapillarySource(client).list_candidates(ListRequest(CELL, 10_000))
    assert len(found) == 5000
    assert sum(1 for b in client.boxes if b[2] - b[0] < 0.005) >= 4  # split at least once


def test_sample_is_spread_over_the_cell_not_first_come():
    lon, lat = uniform(20_000)
    client = StubClient(lon, lat, max_search_requests=200)
    source = MapillarySource(client)
    found = source.list_candidates(ListRequest(CELL, 160))
    assert len(found) == 160
    x0, y0, x1, y1 = cell_bounds(CELL)
    fx = ((np.array([c.lon_deg for c in found]) - x0) / (x1 - x0) * 4).astype(int)
    fy = ((np.array([c.lat_deg for c in found]) - y0) / (y1 - y0) * 4).astype(int)
    assert len(set(zip(fx, fy))) == 16  # every quarter-by-quarter block contributes
    assert len(client.boxes) <= 200  # within the request budget
    again = MapillarySource(StubClient(lon, lat, max_search_requests=200))
    assert [c.image_id for c in again.list_candidates(ListRequest(CELL, 160))] == \
        [c.image_id for c in found]  # deterministic for a seed
    other = MapillarySource(StubClient(lon, lat, max_search_requests=200))
    assert {c.image_id for c in other.list_candidates(ListRequest(CELL, 160, seed=1))} != \
        {c.image_id for c in found}


def test_coverage_points_choose_only_boxes_with_imagery():
    lon, lat = uniform(300)
    lon, lat = lon[:3], lat[:3]  # three images in the whole cell
    client = StubClient(lon, lat)
    source = MapillarySource(client)
    source.coverage_points = lambda bbox: np.stack([lon, lat], axis=1)
    object.__setattr__(client.settings, "use_coverage_tiles", True)
    found = source.list_candidates(ListRequest(CELL, 100))
    assert len(found) == 3
    assert len(client.boxes) <= 3 * 9  # no scan of the ~650 empty boxes
    assert source.last_listing["coverage"] == "tiles"
