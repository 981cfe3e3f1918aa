"""The crawl plan library: coverage from the demo server's tiles, density-adaptive splits,
budgets by policy, the dry run, and the stored plan."""

from __future__ import annotations

from collections import Counter

import numpy as np
import polars as pl
import pytest

from geo_assets import layout
from geo_assets import plan as P
from geo_assets.cells import points_to_cells
from geo_assets.errors import InputError
from geo_assets.settings import HttpSettings, MapillarySettings, PlanSettings, StreetViewSettings

CRAWL_LEVEL = 4


@pytest.fixture
def tiny_plan_inputs(demo_world, demo_server):
    from geo_assets.clients.mapillary import MapillaryClient

    lat, lon = demo_world.image_lat_lon
    cells = sorted(set(points_to_cells(lat, lon, CRAWL_LEVEL).tolist()))
    client = MapillaryClient("demo-token", f"{demo_server.url}/mapillary",
                             f"{demo_server.url}/mapillary-tiles",
                             MapillarySettings(http=HttpSettings(requests_per_s=0)))
    try:
        yield cells, P.mapillary_coverage(client, cells, zoom=5)
    finally:
        client.close()


def _sequence_cells(world, level: int) -> Counter:
    """The true number of sequences starting in each cell (what zoom-5 tiles show)."""
    firsts = [seq[0] for seq in world.sequences.values()]
    lat = np.array([im.lat for im in firsts])
    lon = np.array([im.lon for im in firsts])
    return Counter(points_to_cells(lat, lon, level).tolist())


def test_coverage_from_tiles_counts_the_sequences_of_each_cell(demo_world, tiny_plan_inputs):
    cells, cov = tiny_plan_inputs
    assert cov.unit == "sequences" and cov.requests > 0
    est = dict(zip(cells, P.CellSums(cov, CRAWL_LEVEL)(cells)))
    truth = _sequence_cells(demo_world, CRAWL_LEVEL)
    assert sum(est.values()) == sum(truth.values())
    for cell in cells:  # tile pixels round positions: a point may cross a cell border
        assert abs(est[cell] - truth.get(cell, 0)) <= 1, cell


def test_dense_cells_split_and_get_more_images_than_sparse_ones(demo_world, tiny_plan_inputs):
    cells, cov = tiny_plan_inputs
    settings = PlanSettings(total_images=600, split_threshold=3, max_images_per_cell=100)
    plan = P.build_plan(cells, cov, settings, images_per_cell=50)
    table = plan.table()
    assert int(table["images"].sum()) == 600
    assert table["images"].max() <= 100
    assert min(table["level"]) == CRAWL_LEVEL  # nothing merges below the crawl level
    split = table.filter(pl.col("split"))
    assert split.height > 0 and set(split["crawl_cell"]) <= set(plan.retired)
    assert all(c[:CRAWL_LEVEL] in cells for c in table["cell_id"])
    truth = _sequence_cells(demo_world, CRAWL_LEVEL)
    dense = max(truth, key=truth.get)
    sparse = min(cells, key=lambda c: truth.get(c, 0))
    assert dense in plan.retired and sparse in plan.cells
    per_crawl = table.group_by("crawl_cell").agg(pl.col("images").sum())
    got = dict(zip(per_crawl["crawl_cell"], per_crawl["images"]))
    assert got[dense] > got[sparse]
    # every remaining cell is under the threshold unless it is at the deepest level
    deep = CRAWL_LEVEL + settings.max_split_levels
    assert all(c <= 3 or lv == deep for c, lv in zip(table["coverage"], table["level"]))


def test_uniform_and_weight_policies(tiny_plan_inputs, tmp_path):
    cells, cov = tiny_plan_inputs
    uni = P.build_plan(cells, cov, PlanSettings(policy="uniform", total_images=len(cells) * 7,
                                                split_threshold=1e9), images_per_cell=1)
    assert set(uni.images.tolist()) == {7}
    # weights: one heavy point in the first cell, light ones elsewhere
    from geo_assets.cells import cell_center

    centres = np.array([cell_center(c) for c in cells])
    weights = np.ones(len(cells))
    weights[0] = 20.0
    path = tmp_path / "pop.csv"
    pl.DataFrame({"lat_deg": centres[:, 0], "lon_deg": centres[:, 1],
                  "pop": weights}).write_csv(path)
    settings = PlanSettings(policy="weight", total_images=1000, split_threshold=1e9,
                            weights_file=str(path), weight_column="pop",
                            max_images_per_cell=10_000)
    plan = P.build_plan(cells, cov, settings, images_per_cell=1,
                        weights=P.load_weights(str(path), "pop"))
    assert plan.images[0] == max(plan.images) and plan.images[0] > 10 * plan.images[1] - 10
    with pytest.raises(InputError, match="lacks columns"):
        P.load_weights(str(path), "population")


def test_allocate_respects_total_cap_and_proportions():
    out = P.allocate([10, 1, 1, 0], 100, cap=60)
    assert out.sum() == 100 and out.max() <= 60 and out[3] == 0
    assert out[1] == out[2] == 20
    assert P.allocate([1, 1], 100, cap=30).tolist() == [30, 30]  # all capped: less than total
    assert P.allocate([0, 0, 0], 10).sum() == 10  # no coverage at all: uniform
    assert P.allocate([3, 1], 7).tolist() == [5, 2]


def test_plan_settings_are_checked():
    with pytest.raises(InputError, match="policy"):
        PlanSettings(policy="population")
    with pytest.raises(InputError, match="weights_file"):
        PlanSettings(policy="weight")


def test_dry_run_and_stored_plan(tiny_plan_inputs, data_root):
    cells, cov = tiny_plan_inputs
    plan = P.build_plan(cells, cov, PlanSettings(total_images=400, split_threshold=3),
                        images_per_cell=1)
    dry = P.dry_run(plan, ["mapillary", "streetview", "local"])
    assert dry["mapillary"]["images"] == 400 == dry["mapillary"]["requests"]["cdn"]
    assert dry["mapillary"]["requests"]["tiles"] >= cov.requests
    sv = dry["streetview"]
    assert sv["images"] == sv["panos"] * 4 >= 400
    assert sv["cost_usd"] == pytest.approx(sv["images"] * 7.0 / 1000, abs=0.01)
    info = P.write_plan(data_root, plan, dry)
    assert info["dry_run"] == dry and info["images_total"] == 400
    assert P.plan_budgets(data_root) == plan.budgets()
    assert data_root.read_bytes(layout.CRAWL_PLAN_PNG)[:8] == b"\x89PNG\r\n\x1a\n"


def test_streetview_samples_and_local_points_estimate_coverage(demo_world, demo_server,
                                                                tmp_path):
    from geo_assets.clients.local_folder import LocalFolderSource
    from geo_assets.clients.streetview import StreetViewClient

    lat = np.array([p.lat for p in demo_world.panoramas])
    lon = np.array([p.lon for p in demo_world.panoramas])
    counts = Counter(points_to_cells(lat, lon, 3).tolist())
    busy = max(counts, key=counts.get)
    empty = next(c for c in ("000", "001", "010", "011") if c not in counts)
    client = StreetViewClient("demo-key", None, f"{demo_server.url}/google",
                              StreetViewSettings(http=HttpSettings(requests_per_s=0)))
    try:
        cov = P.streetview_coverage(client, [busy, empty], samples_per_cell=8)
    finally:
        client.close()
    assert cov.requests == 16 and cov.source == "streetview"
    sums = P.CellSums(cov, 3)([busy, empty])
    assert sums[0] > 0 and sums[1] == 0

    sidecar = tmp_path / "photos.csv"
    pl.DataFrame({"file": [f"{i}.jpg" for i in range(5)], "lat": [45.0 + i * 1e-3
                  for i in range(5)], "lon": [7.0] * 5}).write_csv(sidecar)
    local = P.estimate_coverage(LocalFolderSource(tmp_path, sidecar), ["3"], PlanSettings())
    assert P.CellSums(local, 1)(["3", "0"]).tolist() == [5.0, 0.0]
