"""The crawl plan through Dagster on the tiny demo world: the crawl_plan asset (dry run in its
metadata), the sensor registering the plan's cells and retiring split parents, and the
per-cell crawl following each cell's budget."""

from __future__ import annotations

from collections import Counter

import dagster as dg
import polars as pl

from geo_assets import layout
from geo_assets.cells import points_to_cells
from geo_assets.storage import DataRoot
from pipeline import jobs, plan_cli
from pipeline.assets import ingest
from pipeline.assets.plan import crawl_plan
from pipeline.partitions import crawl_cells
from pipeline.sensors import CellsCursor, make_crawl_cells_sensor, retire_cells
from tests.pipeline.conftest import CRAWL_LEVEL, cell_region, tiny_resources, write_grid

PLAN = {"plan_total_images": 150, "plan_split_threshold": 2, "plan_max_images_per_cell": 60,
        "sources": ["mapillary"]}


def _tick(sensor, instance, settings, cursor=None):
    with dg.build_sensor_context(instance=instance, cursor=cursor,
                                 resources={"settings": settings}) as context:
        return sensor(context)


def _apply(instance, result) -> None:
    for request in result.dynamic_partitions_requests:
        keys = list(request.partition_keys)
        if isinstance(request, dg.DeleteDynamicPartitionsRequest):
            for key in keys:
                instance.delete_dynamic_partition(crawl_cells.name, key)
        else:
            instance.add_dynamic_partitions(crawl_cells.name, keys)


def _region(covered_cells) -> str:
    """A level-3 cell around the tiny world's densest level-5 cell."""
    return cell_region(covered_cells[0][:3])


def test_plan_sensor_and_crawl_follow_the_budgets(demo_server, tiny_world, covered_cells,
                                                  tmp_path, capsys):
    root = DataRoot(str(tmp_path / "data"))
    region = _region(covered_cells)
    grid = write_grid(root.url, region)
    resources = tiny_resources(root.url, region, **PLAN)
    settings = resources["settings"]
    sensor = make_crawl_cells_sensor(jobs.ingest_cells_job, [a.key for a in ingest.CELL_ASSETS])
    with dg.instance_for_test() as instance:
        # cells registered from the grid before any plan existed
        first = _tick(sensor, instance, settings)
        _apply(instance, first)
        result = dg.materialize([crawl_plan], instance=instance, resources=resources)
        assert result.success
        meta = result.asset_materializations_for_node("crawl_plan")[0].metadata
        assert meta["images_total"].value == 150
        assert meta["dry_run"].data["mapillary"]["images"] == 150
        assert "| mapillary |" in meta["dry_run_table"].value
        table = pl.read_parquet(root.path(layout.CRAWL_PLAN))
        assert meta["split_cells"].value == table.filter(pl.col("split")).height > 0
        assert plan_cli.cli(["--data-root", root.url]) == 0
        printed = capsys.readouterr().out
        assert f"{table.height} cells" in printed and "mapillary" in printed
        assert "150 images in" in printed and "cdn 150" in printed

        second = _tick(sensor, instance, settings, cursor=first.cursor)
        _apply(instance, second)
        registered = instance.get_dynamic_partitions(crawl_cells.name)
        assert sorted(registered) == sorted(table["cell_id"].to_list())
        retired = set(grid) - set(registered)
        assert retired and retired == set(table.filter(pl.col("split"))["crawl_cell"])
        assert [k for r in second.run_requests for k in
                registered[registered.index(r.tags["dagster/asset_partition_range_start"]):
                           registered.index(r.tags["dagster/asset_partition_range_end"]) + 1]
                ] == [k for k in registered if k not in set(grid)]  # only the new children

        crawl = dg.materialize(list(ingest.CELL_ASSETS), instance=instance,
                               resources=resources, selection=[ingest.mapillary_images],
                               tags={"dagster/asset_partition_range_start": registered[0],
                                     "dagster/asset_partition_range_end": registered[-1]})
        assert crawl.success

    assert plan_cli.cli(["--data-root", root.url, "--status"]) == 0
    assert f"mapillary  done {table.height}," in capsys.readouterr().out
    lat, lon = tiny_world.image_lat_lon
    budgets = dict(zip(table["cell_id"], table["images"]))
    for cell, budget in budgets.items():
        available = Counter(points_to_cells(lat, lon, len(cell)).tolist())[cell]
        rows = pl.read_parquet(root.path(layout.cell_manifest("mapillary", cell))).height
        # the listing takes the budget where the cell holds enough, all it has otherwise
        assert rows <= budget and rows >= min(budget, available) - 2, (cell, rows, budget)
    dense = max(budgets, key=lambda c: (len(c) > CRAWL_LEVEL, budgets[c]))
    sparse = min(budgets, key=budgets.get)
    assert budgets[dense] > budgets[sparse]


def test_retiring_cells_moves_the_cursor():
    registered = ["a", "b", "c", "d"]
    kept, cursor, retire = retire_cells(registered, {"b", "d"}, CellsCursor(3, 5, 4))
    assert kept == ["a", "c"] and retire == ["b", "d"]
    assert cursor == CellsCursor(2, 5, 2)
    assert retire_cells(registered, set(), CellsCursor(4))[2] == []
