"""Crawl states from the data root: done, stale after the set age, failed with backoff,
retry due, pending; and the sensor's run requests for stale and failed cells."""

from __future__ import annotations

import json

from geo_assets import layout
from geo_assets.crawl_state import (
    DONE,
    FAILED,
    PENDING,
    RETRY_DUE,
    STALE,
    crawl_status,
    due_cells,
    record_failure,
)
from geo_assets.settings import RecoverySettings
from pipeline.constants import FORCE_TAG
from pipeline.resources import GeoscoutSettings
from pipeline.sensors import recovery_requests

NOW = 1_800_000_000.0
DAY = 86_400.0


def _done(root, cell: str, finished_at: float) -> None:
    root.write_bytes(layout.cell_stats("mapillary", cell),
                     json.dumps({"cell_id": cell, "finished_at": finished_at}).encode())


def test_states_backoff_and_recovery_requests(data_root):
    _done(data_root, "0300", NOW - 1 * DAY)
    _done(data_root, "0301", NOW - 40 * DAY)
    settings = RecoverySettings(max_age_days=30, retry_base_s=600, retry_max_s=3000)
    first = record_failure(data_root, "mapillary", "0302", "HTTP 503", quota=False,
                           settings=settings, now=NOW - 700)
    second = record_failure(data_root, "mapillary", "0302", "HTTP 503", quota=False,
                            settings=settings, now=NOW - 700)
    assert first["next_retry_at"] == NOW - 100 and second["next_retry_at"] == NOW + 500
    record_failure(data_root, "mapillary", "0303", "quota", quota=True, settings=settings,
                   now=NOW - 4000)  # quota wait 3600 s capped at retry_max_s 3000: due
    cells = ["0300", "0301", "0302", "0303", "0310"]
    states = {s.cell_id: s.state for s in crawl_status(data_root, ["mapillary"], cells,
                                                       settings, NOW)}
    assert states == {"0300": DONE, "0301": STALE, "0302": FAILED, "0303": RETRY_DUE,
                      "0310": PENDING}
    assert [s.cell_id for s in due_cells(data_root, ["mapillary"], cells, settings, NOW)] == \
        ["0301", "0303"]

    geo = GeoscoutSettings(data_root=data_root.url, recrawl_max_age_days=30,
                           retry_base_s=600, retry_max_s=3000)
    requests = {r.partition_key: r for r in recovery_requests(data_root, geo, cells, [], NOW)}
    assert set(requests) == {"0301", "0303"}
    assert requests["0301"].tags[FORCE_TAG] == "true"
    assert requests["0303"].tags["geoscout/retry"] == "1"
    # cells already in this tick's batches are not requested twice
    assert not recovery_requests(data_root, geo, cells, [["0301", "0303"]], NOW)
