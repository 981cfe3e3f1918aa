"""Incremental operation on a real Dagster instance: cells added -> the sensor registers them
and requests batched runs -> the runs crawl them -> the automation conditions refresh the
merged manifest exactly once, never request cells that are already done, never train."""

from __future__ import annotations

import dagster as dg
import polars as pl
import pytest

from geo_assets.cells import cell_bounds, neighbours
from geo_assets.layout import IMAGE_MANIFEST as MERGED_PATH
from geo_assets.storage import DataRoot
from pipeline.definitions import build_definitions
from pipeline.partitions import crawl_cells
from tests.pipeline.conftest import tiny_resources

MANIFEST = dg.AssetKey("image_manifest")
CELL_KEYS = [dg.AssetKey(n) for n in ("mapillary_images", "streetview_images", "local_images")]


@pytest.fixture(scope="module")
def two_cells(covered_cells) -> tuple[str, str]:
    """Two covered cells that share an edge, so that their bbox holds just the two."""
    for a in covered_cells:
        west, south, east, north = cell_bounds(a)
        for b in neighbours(a):
            bw, bs, _, _ = cell_bounds(b)
            if b in covered_cells and ((bs == south and bw == east)
                                       or (bw == west and bs == north)):
                return a, b
    raise AssertionError("the tiny world has no two covered cells sharing an edge")


def _bbox(*cells: str, inset: float = 0.01) -> str:
    bounds = [cell_bounds(c) for c in cells]
    return (f"bbox:{min(b[0] for b in bounds) + inset},{min(b[1] for b in bounds) + inset},"
            f"{max(b[2] for b in bounds) - inset},{max(b[3] for b in bounds) - inset}")


def _defs(root: str, region: str) -> dg.Definitions:
    return build_definitions(resources=tiny_resources(root, region=region, cells_per_run=1,
                                                      coastal_buffer_km=0.0))


def _crawl_new_cells(defs: dg.Definitions, instance, cursor):
    """What the daemon does on a sensor tick: register partitions, then launch each run."""
    sensor = defs.resolve_sensor_def("crawl_cells_sensor")
    with dg.build_sensor_context(instance=instance, cursor=cursor,
                                 resources={"settings": defs.resources["settings"]}) as ctx:
        result = sensor(ctx)
    for request in result.dynamic_partitions_requests:
        instance.add_dynamic_partitions(crawl_cells.name, list(request.partition_keys))
    job = defs.resolve_job_def("ingest_cells_job")
    for request in result.run_requests:
        assert job.execute_in_process(instance=instance, tags=request.tags).success
    return result



def test_cells_added_runs_requested_manifest_refreshed_once(demo_server, two_cells, tmp_path):
    first, second = two_cells
    root = str(tmp_path / "data")
    with dg.instance_for_test() as instance:
        defs = _defs(root, _bbox(first))
        assert defs.resolve_job_def("grid_job").execute_in_process(instance=instance).success
        auto = dg.evaluate_automation_conditions(defs=defs, instance=instance)  # always on
        assert auto.total_requested == 0                       # no cells yet: nothing to do
        tick = _crawl_new_cells(defs, instance, None)
        assert [len(r.partition_keys) for r in tick.dynamic_partitions_requests] == [1]
        assert len(tick.run_requests) == 1

        auto = dg.evaluate_automation_conditions(defs=defs, instance=instance,
                                                 cursor=auto.cursor)
        assert auto.get_num_requested(MANIFEST) == 1        # the new cell landed
        assert all(auto.get_num_requested(k) == 0 for k in CELL_KEYS)  # already crawled
        assert _datasets_follow_and_never_trains(defs, auto)
        _refresh_manifest(defs, instance, auto)
        auto = dg.evaluate_automation_conditions(defs=defs, instance=instance,
                                                 cursor=auto.cursor)
        assert auto.get_num_requested(MANIFEST) == 0        # nothing new: no refresh

        # the region grows by one cell: re-materialize the grid, the sensor picks it up
        defs = _defs(root, _bbox(first, second))
        assert defs.resolve_job_def("grid_job").execute_in_process(instance=instance).success
        tick = _crawl_new_cells(defs, instance, tick.cursor)
        assert [list(r.partition_keys) for r in tick.dynamic_partitions_requests] == [[second]]
        assert [r.tags["dagster/asset_partition_range_start"] for r in tick.run_requests] == [
            second]
        assert instance.get_dynamic_partitions(crawl_cells.name) == [first, second]

        auto = dg.evaluate_automation_conditions(defs=defs, instance=instance,
                                                 cursor=auto.cursor)
        assert auto.get_num_requested(MANIFEST) == 1        # refreshed once for the new cell
        assert all(auto.get_num_requested(k) == 0 for k in CELL_KEYS)
        assert _datasets_follow_and_never_trains(defs, auto)
        _refresh_manifest(defs, instance, auto)
        auto = dg.evaluate_automation_conditions(defs=defs, instance=instance,
                                                 cursor=auto.cursor)
        assert auto.get_num_requested(MANIFEST) == 0
        assert len(instance.fetch_materializations(MANIFEST, limit=10).records) == 2

    merged = pl.read_parquet(DataRoot(root).path(MERGED_PATH))
    assert set(merged["cell_id"]) == {first, second}


def _datasets_follow_and_never_trains(defs: dg.Definitions, auto) -> bool:
    """With the manifest, the same tick asks for every dataset asset once (one run), and
    never for the model or its report."""
    graph = defs.resolve_asset_graph()
    groups = {k: graph.get(k).group_name for k in graph.get_all_asset_keys()}
    assert all(auto.get_num_requested(k) == 1 for k, g in groups.items() if g == "dataset")
    return all(auto.get_num_requested(k) == 0 for k, g in groups.items() if g in ("train", "eval"))


def _refresh_manifest(defs: dg.Definitions, instance, auto) -> None:
    """Materialize the manifest as the automation sensor's run would. The datasets it asked
    for downstream are checked, not built (their own tests do that)."""
    assert auto.get_num_requested(MANIFEST) == 1
    job = defs.resolve_implicit_global_asset_job_def()
    assert job.execute_in_process(instance=instance, asset_selection=[MANIFEST]).success
