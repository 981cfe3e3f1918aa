"""The crawl-cells sensor: registers the region's land cells, requests them in batches with
deterministic run keys, keeps a JSON cursor, and picks up cells added later."""

from __future__ import annotations

import json

import dagster as dg
import pytest

from pipeline import jobs
from pipeline.assets.ingest import CELL_ASSETS
from pipeline.partitions import crawl_cells
from pipeline.resources import GeoscoutSettings
from pipeline.sensors import (
    PLACES_TAG,
    PLACES_TAG_MAX_CHARS,
    RANGE_END_TAG,
    RANGE_START_TAG,
    CellsCursor,
    batch_run_request,
    make_crawl_cells_sensor,
    plan_cells,
)
from tests.pipeline.conftest import CRAWL_LEVEL, write_grid

SMALL = "bbox:5,40,20,50"   # 4 land cells at level 5
GROWN = "bbox:5,35,30,55"   # 12, including the 4 above


# --- the pure planning step ----------------------------------------------------------------

def test_plan_registers_new_cells_sorted_and_batches_them():
    plan = plan_cells(["3", "1", "2", "0", "4"], [], set(), CellsCursor(), 2, level=1)
    assert plan.new_cells == ["0", "1", "2", "3", "4"]
    assert plan.batches == [["0", "1"], ["2", "3"], ["4"]]
    assert plan.cursor == CellsCursor(requested=5, level=1, n_cells=5)


def test_plan_requests_only_cells_past_the_cursor_and_not_done():
    registered = ["a", "b", "c", "d"]
    # a tick registered c and d but died before its runs were submitted: cursor says 2
    plan = plan_cells(registered + ["e"], registered, {"d"}, CellsCursor(requested=2), 10, 1)
    assert plan.new_cells == ["e"]
    assert plan.batches == [["c"], ["e"]]  # contiguous ranges only: d (done) splits them


def test_plan_crawls_a_re_registered_cell_even_if_it_was_done_before():
    plan = plan_cells(["a", "b"], ["a"], {"a", "b"}, CellsCursor(), 10, 1)
    assert plan.new_cells == ["b"]
    assert plan.batches == [["b"]]


def test_plan_with_nothing_new_is_empty():
    plan = plan_cells(["a", "b"], ["a", "b"], set(), CellsCursor(requested=2), 10, 1)
    assert plan.new_cells == [] and plan.batches == []


def test_run_keys_are_deterministic_per_tick_and_new_after_re_registration():
    assert batch_run_request(["01", "02"]).run_key == batch_run_request(["01", "02"]).run_key
    assert batch_run_request(["01", "02"]).run_key != batch_run_request(["01", "03"]).run_key
    assert batch_run_request(["01", "02"], 0).run_key != batch_run_request(["01", "02"], 2).run_key
    request = batch_run_request(["01", "02"])
    assert (request.tags[RANGE_START_TAG], request.tags[RANGE_END_TAG]) == ("01", "02")


def test_cursor_round_trips_as_json():
    cursor = CellsCursor(requested=7, level=5, n_cells=7)
    assert json.loads(cursor.dumps()) == {"requested": 7, "level": 5, "n_cells": 7}
    assert CellsCursor.parse(cursor.dumps()) == cursor
    assert CellsCursor.parse(None) == CellsCursor()


# --- the sensor against a real instance ----------------------------------------------------

@pytest.fixture
def sensor():
    return make_crawl_cells_sensor(jobs.ingest_cells_job, [a.key for a in CELL_ASSETS])


def _tick(sensor, instance, settings, cursor=None) -> dg.SensorResult | dg.SkipReason:
    with dg.build_sensor_context(instance=instance, cursor=cursor,
                                 resources={"settings": settings}) as context:
        return sensor(context)


def _apply(instance, result: dg.SensorResult) -> None:
    for request in result.dynamic_partitions_requests:
        instance.add_dynamic_partitions(crawl_cells.name, list(request.partition_keys))


def test_sensor_registers_cells_and_picks_up_cells_added_later(sensor, tmp_path):
    root = str(tmp_path / "data")
    settings = GeoscoutSettings(data_root=root, crawl_level=CRAWL_LEVEL, cells_per_run=3)
    small = write_grid(root, SMALL)
    assert len(small) == 4
    with dg.instance_for_test() as instance:
        first = _tick(sensor, instance, settings)
        assert isinstance(first, dg.SensorResult)
        assert [list(r.partition_keys) for r in first.dynamic_partitions_requests] == [small]
        ranges = [(r.tags[RANGE_START_TAG], r.tags[RANGE_END_TAG]) for r in first.run_requests]
        assert ranges == [(small[0], small[2]), (small[3], small[3])]
        assert json.loads(first.cursor) == {"requested": 4, "level": CRAWL_LEVEL, "n_cells": 4}
        # a retried tick (same cursor, nothing applied) asks for exactly the same runs
        again = _tick(sensor, instance, settings)
        assert [r.run_key for r in again.run_requests] == [r.run_key for r in first.run_requests]
        assert len({r.run_key for r in first.run_requests}) == 2

        _apply(instance, first)
        quiet = _tick(sensor, instance, settings, cursor=first.cursor)
        assert not quiet.run_requests and not quiet.dynamic_partitions_requests
        assert quiet.skip_reason is not None

        grown = write_grid(root, GROWN)  # the region grew: 8 more cells
        new = sorted(set(grown) - set(small))
        assert len(new) == 8
        later = _tick(sensor, instance, settings, cursor=quiet.cursor)
        assert [list(r.partition_keys) for r in later.dynamic_partitions_requests] == [new]
        requested = [k for r in later.run_requests for k in
                     _range(new, r.tags[RANGE_START_TAG], r.tags[RANGE_END_TAG])]
        assert requested == new  # only the new cells, in batches of at most 3
        assert [r.tags["geoscout/cells"] for r in later.run_requests] == ["3", "3", "2"]
        assert json.loads(later.cursor)["requested"] == 12
        _apply(instance, later)
        assert instance.get_dynamic_partitions(crawl_cells.name) == [*small, *new]


def test_each_crawl_run_is_tagged_with_the_countries_of_its_cells(sensor, tmp_path):
    from geo_assets.cell_places import cell_places
    from geo_assets.cells import point_to_cell
    from pipeline.commands.runs import Session, cell_places_list

    root = str(tmp_path / "data")
    settings = GeoscoutSettings(data_root=root, crawl_level=CRAWL_LEVEL, cells_per_run=3)
    cells = write_grid(root, GROWN)
    rome, berlin = (point_to_cell(lat, lon, CRAWL_LEVEL) for lat, lon in
                    ((41.9, 12.5), (52.5, 13.4)))
    with dg.instance_for_test() as instance:
        result = _tick(sensor, instance, settings)
        tags = {}
        for request in result.run_requests:
            for cell in _range(cells, request.tags[RANGE_START_TAG], request.tags[RANGE_END_TAG]):
                tags[cell] = request.tags[PLACES_TAG]
        assert "Italy" in tags[rome] and "Germany" in tags[berlin]
        for request in result.run_requests:  # every cell's first country is named, bounded
            batch = _range(cells, request.tags[RANGE_START_TAG], request.tags[RANGE_END_TAG])
            text = request.tags[PLACES_TAG]
            assert len(text) <= PLACES_TAG_MAX_CHARS
            firsts = {cell_places([c])[c].split(",")[0].split(" and ")[0] for c in batch}
            assert all(f in text for f in firsts) or text.endswith("more"), (text, firsts)

        # Dagster keeps the tag on the run (a run tag may hold spaces and commas)
        @dg.asset
        def probe() -> None:
            return None

        run = dg.materialize([probe], instance=instance, tags=dict(result.run_requests[0].tags))
        assert instance.get_run_by_id(run.run_id).tags[PLACES_TAG] == \
            result.run_requests[0].tags[PLACES_TAG]

        _apply(instance, result)  # `geoscout cells list`: each registered cell with its place
        listed = cell_places_list(Session(None, instance, 0.0))
        assert [c for c, _, _ in listed] == cells and not any(d for _, d, _ in listed)
        place = {c: p for c, _, p in listed}[rome]
        assert place.startswith("Italy") and "(lat " in place


def _range(keys: list[str], start: str, end: str) -> list[str]:
    return keys[keys.index(start): keys.index(end) + 1]


def test_sensor_skips_without_a_grid_and_names_the_fix(sensor, tmp_path):
    settings = GeoscoutSettings(data_root=str(tmp_path / "data"), crawl_level=CRAWL_LEVEL)
    with dg.instance_for_test() as instance:
        result = _tick(sensor, instance, settings)
    assert isinstance(result, dg.SkipReason)
    assert "grid_cells" in result.skip_message


def test_sensor_skips_when_the_crawl_level_is_deeper_than_the_grid(sensor, tmp_path):
    root = str(tmp_path / "data")
    write_grid(root, SMALL)
    settings = GeoscoutSettings(data_root=root, crawl_level=CRAWL_LEVEL + 1)
    with dg.instance_for_test() as instance:
        result = _tick(sensor, instance, settings)
    assert isinstance(result, dg.SkipReason)
    assert "grid_max_level" in result.skip_message
