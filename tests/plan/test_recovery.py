"""Freshness and recovery through Dagster on the tiny demo world: a forced re-crawl finds
images the server published later and keeps the ones stored before; cells failed by an
exhausted quota are retried by the sensor once the backoff is over, and then succeed."""

from __future__ import annotations

import json
import time

import dagster as dg
import polars as pl

from geo_assets import layout
from geo_assets.cells import points_to_cells
from geo_assets.crawl_state import DONE, FAILED, crawl_status, format_status
from geo_assets.demo.faults import FaultConfig
from geo_assets.demo.server import DemoServer
from geo_assets.storage import DataRoot
from pipeline import jobs
from pipeline.assets import ingest
from pipeline.constants import FORCE_TAG
from pipeline.partitions import crawl_cells
from pipeline.resources import DEMO_GOOGLE_KEY, DEMO_MAPILLARY_TOKEN, demo_servers
from pipeline.sensors import make_crawl_cells_sensor
from tests.pipeline.conftest import (
    CRAWL_LEVEL,
    TINY_SEED,
    cell_region,
    tiny_resources,
    write_grid,
)


def _crawl(instance, resources, cell, **tags):
    return dg.materialize(list(ingest.CELL_ASSETS), instance=instance, resources=resources,
                          selection=[ingest.mapillary_images], partition_key=cell,
                          tags=tags, raise_on_error=False)


def _manifest_ids(root: DataRoot, cell: str) -> set[str]:
    table = pl.read_parquet(root.path(layout.cell_manifest("mapillary", cell)))
    return set(table["source_id"].to_list())


def test_forced_recrawl_finds_new_images_and_keeps_old_ones(demo_server, tiny_world,
                                                            covered_cells, tmp_path):
    cell = covered_cells[0]
    lat, lon = tiny_world.image_lat_lon
    in_cell = [im.image_id for im, c in zip(tiny_world.images,
                                            points_to_cells(lat, lon, CRAWL_LEVEL)) if c == cell]
    old, new = set(in_cell[: len(in_cell) // 2]), set(in_cell[len(in_cell) // 2:])
    root = DataRoot(str(tmp_path / "data"))
    # retry_rounds 0: a done cell with retryable drops (the demo's corrupt artefacts) is not
    # re-opened either, so only the forced crawl lists the cell again
    resources = tiny_resources(root.url, sources=["mapillary"], images_per_cell=500,
                               retry_rounds=0)
    demo_server.hold_back(new)
    try:
        with dg.instance_for_test() as instance:
            instance.add_dynamic_partitions(crawl_cells.name, [cell])
            assert _crawl(instance, resources, cell).success
            first = _manifest_ids(root, cell)
            assert first and first <= old
            # the service adds the new images and drops the old ones from its search
            demo_server.publish(new)
            demo_server.hold_back(old)
            assert _crawl(instance, resources, cell).success  # done: not crawled again
            assert _manifest_ids(root, cell) == first
            assert _crawl(instance, resources, cell, **{FORCE_TAG: "true"}).success
    finally:
        demo_server.publish()
    second = _manifest_ids(root, cell)
    assert first < second and second - first <= new and len(second - first) > 0
    table = pl.read_parquet(root.path(layout.cell_manifest("mapillary", cell)))
    kept_before = table.filter(pl.col("source_id").is_in(sorted(first)) & pl.col("kept"))
    for sha in kept_before["sha256"].to_list():  # the old images' files are still there
        assert root.exists(layout.image(sha))


def test_quota_failures_are_retried_after_the_backoff(demo_server, covered_cells, tmp_path):
    cell = covered_cells[0]
    root = DataRoot(str(tmp_path / "data"))
    region = cell_region(cell)
    assert write_grid(root.url, region) == [cell]
    resources = tiny_resources(root.url, region, sources=["mapillary"], quota_retry_s=1.5)
    settings = resources["settings"]
    sensor = make_crawl_cells_sensor(jobs.ingest_cells_job, [a.key for a in ingest.CELL_ASSETS])
    quota = DemoServer(demo_server.world, mapillary_token=DEMO_MAPILLARY_TOKEN,
                       google_key=DEMO_GOOGLE_KEY,
                       faults=FaultConfig(rate_429=1.0, retry_after_s=86_400))
    with dg.instance_for_test() as instance, quota:
        with dg.build_sensor_context(instance=instance, resources={"settings": settings}) as ctx:
            first = sensor(ctx)
        instance.add_dynamic_partitions(crawl_cells.name, [cell])
        demo_servers.use(TINY_SEED, "tiny", quota)
        try:
            failed = _crawl(instance, resources, cell)
        finally:
            demo_servers.use(TINY_SEED, "tiny", demo_server)
        assert not failed.success
        record = json.loads(root.read_bytes(layout.cell_failure("mapillary", cell)))
        assert record["kind"] == "quota" and record["attempts"] == 1
        assert DEMO_MAPILLARY_TOKEN not in record["error"]
        [state] = crawl_status(root, ["mapillary"], [cell], settings.recovery_settings())
        assert state.state == FAILED and "1 failures" in format_status([state])

        def tick():
            with dg.build_sensor_context(instance=instance, cursor=first.cursor,
                                         resources={"settings": settings}) as ctx:
                return sensor(ctx)

        assert not tick().run_requests  # backing off
        time.sleep(max(0.0, record["next_retry_at"] - time.time()) + 0.1)
        [retry] = tick().run_requests
        assert retry.partition_key == cell and retry.tags["geoscout/retry"] == "1"
        assert _crawl(instance, resources, cell, **retry.tags).success
    assert not root.exists(layout.cell_failure("mapillary", cell))
    [state] = crawl_status(root, ["mapillary"], [cell], settings.recovery_settings())
    assert state.state == DONE
