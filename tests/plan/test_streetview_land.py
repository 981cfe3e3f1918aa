"""The streetview_images asset passes each cell's land part: its metadata lookups are
sampled on land, not over the sea of a coastal cell."""

from __future__ import annotations

import dagster as dg
import numpy as np
import shapely

from geo_assets import land as land_lib
from geo_assets.cells import cell_bounds, points_to_cells
from geo_assets.demo.streetview_api import parse_location
from geo_assets.naturalearth import embedded_countries
from geo_assets.storage import DataRoot
from pipeline.assets import ingest
from pipeline.partitions import crawl_cells
from tests.pipeline.conftest import CRAWL_LEVEL, tiny_resources


def _coastal_cell(world, parts) -> tuple[str, object, float]:
    """The tiny world's level-5 cell with panoramas and the least land (but some)."""
    lat = np.array([p.lat for p in world.panoramas])
    lon = np.array([p.lon for p in world.panoramas])
    best = None
    for cell in sorted(set(points_to_cells(lat, lon, CRAWL_LEVEL).tolist())):
        land = land_lib.cell_land(parts, cell)
        if land is None:
            continue
        share = land.area / shapely.box(*cell_bounds(cell)).area
        if best is None or share < best[2]:
            best = (cell, land, share)
    return best


def test_lookups_fall_on_the_cells_land(demo_server, tiny_world, tmp_path, monkeypatch):
    root = DataRoot(str(tmp_path / "data"))
    parts = land_lib.land_parts(embedded_countries())
    land_lib.write_land(parts, root)
    cell, land, share = _coastal_cell(tiny_world, parts)
    assert share < 0.8  # enough sea for a sampler ignoring land to miss it
    seen: list[tuple[float, float]] = []
    original = demo_server.streetview.metadata

    def spy(path, params, raw_query):
        loc = parse_location(params.get("location", ""))
        if isinstance(loc, tuple):
            seen.append(loc)
        return original(path, params, raw_query)

    monkeypatch.setattr(demo_server.streetview, "metadata", spy)
    resources = tiny_resources(root.url, sources=["streetview"])
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(crawl_cells.name, [cell])
        result = dg.materialize(list(ingest.CELL_ASSETS), instance=instance,
                                resources=resources, selection=[ingest.streetview_images],
                                partition_key=cell)
    assert result.success and len(seen) > 10
    pts = np.array(seen)
    on_land = shapely.contains_xy(shapely.buffer(land, 0.01), pts[:, 1], pts[:, 0])
    # discovery points lie on land; follow-up rings 60 m around found panoramas may not
    assert on_land.mean() >= 0.95, (on_land.mean(), share)
