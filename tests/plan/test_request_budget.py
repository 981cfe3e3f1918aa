"""Request budgets per endpoint class: a minute window that waits, a daily budget that stops
the crawl until midnight UTC (the cells retried then), and usage carried over between runs
of the same day."""

from __future__ import annotations

import json

import dagster as dg
import pytest

from geo_assets import layout
from geo_assets.request_budget import DailyBudgetExhausted, RequestBudget, utc_day
from geo_assets.settings import RequestBudgetSettings
from geo_assets.storage import DataRoot
from pipeline.assets import ingest
from pipeline.partitions import crawl_cells
from pipeline.resources import MapillaryResource
from tests.pipeline.conftest import TINY_SEED, tiny_resources

DAY = 86_400.0


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_minute_budget_waits_and_daily_budget_stops_until_midnight():
    clock = FakeClock(10 * DAY + 100.0)
    budget = RequestBudget(RequestBudgetSettings(search_per_min=2, cdn_per_day=3),
                           {"cdn": 1}, clock=clock, sleep=clock.sleep)
    for _ in range(3):
        budget.take("search")
    assert clock.slept and sum(clock.slept) == pytest.approx(60.0)  # third waited a minute
    budget.take("cdn")
    budget.take("cdn")  # 1 used before + 2 = the day's 3
    with pytest.raises(DailyBudgetExhausted) as info:
        budget.take("cdn")
    assert info.value.resume_at == 11 * DAY
    assert budget.usage() == {"search": 3, "cdn": 3}
    clock.now = 11 * DAY + 1  # a new UTC day: the budget is back
    budget.take("cdn")
    assert budget.usage() == {"cdn": 1}


def test_daily_tile_budget_stops_the_crawl_and_carries_over(demo_server, covered_cells,
                                                            tmp_path):
    cell = covered_cells[0]
    root = DataRoot(str(tmp_path / "data"))
    resources = tiny_resources(root.url, sources=["mapillary"])
    resources["mapillary"] = MapillaryResource(demo_seed=TINY_SEED, demo_preset="tiny",
                                               requests_per_s=0, tiles_per_day=1)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(crawl_cells.name, [cell])
        result = dg.materialize(list(ingest.CELL_ASSETS), instance=instance,
                                resources=resources, selection=[ingest.mapillary_images],
                                partition_key=cell, raise_on_error=False)
    assert not result.success
    record = json.loads(root.read_bytes(layout.cell_failure("mapillary", cell)))
    assert record["kind"] == "quota" and "tiles" in record["error"]
    assert record["next_retry_at"] % DAY == 0  # midnight UTC
    assert record["next_retry_at"] - record["failed_at"] <= DAY
    day = utc_day(record["failed_at"])
    usage = json.loads(root.read_bytes(layout.request_usage("mapillary", day)))
    assert usage["tiles"] == 1
    again = RequestBudget(RequestBudgetSettings(tiles_per_day=1), usage)
    with pytest.raises(DailyBudgetExhausted):  # a later run the same day stops at once
        again.take("tiles")
