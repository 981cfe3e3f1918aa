"""Transient faults never become permanent drops: under heavy demo-server faults a crawl, then
a re-crawl, ends with the same manifest as a fault-free crawl, and no good image is lost."""

from __future__ import annotations

import json

import polars as pl
import pytest

from geo_assets import layout
from geo_assets.demo.faults import FaultConfig
from geo_assets.demo.server import DemoServer
from geo_assets.demo.world import generate_world
from geo_assets.ingest import ingest_cell
from geo_assets.manifest import RETRYABLE_REASONS
from geo_assets.settings import IngestSettings
from geo_assets.storage import DataRoot
from tests.ingest.ingest_helpers import CountingSource, busiest_cells, demo_mapillary_source

SETTINGS = IngestSettings(target_per_cell=1000, workers=4)
HEAVY = FaultConfig(seed=5, rate_5xx=0.15, rate_429=0.05, rate_drop_connection=0.05,
                    rate_truncated_jpeg=0.3, rate_non_image=0.3, retry_after_s=0)


@pytest.fixture(scope="module")
def world():
    return generate_world(0, "tiny")


@pytest.fixture(scope="module")
def cells(world):
    return busiest_cells(world, 6, 2)


@pytest.fixture(scope="module")
def clean(world, cells, tmp_path_factory):
    root = DataRoot(str(tmp_path_factory.mktemp("clean")))
    with DemoServer(world) as server:
        return {c: ingest_cell(demo_mapillary_source(server), c, root, SETTINGS) for c in cells}


def crawl(world, cells, root, settings, faults=None, retries=None):
    http = {"retry": retries} if retries else {}
    with DemoServer(world, faults=faults) as server:
        source = CountingSource(demo_mapillary_source(server, **http))
        return {c: ingest_cell(source, c, root, settings) for c in cells}, source, server.counters


@pytest.mark.parametrize("force", [False, True])
def test_heavy_faults_then_a_recrawl_equal_a_fault_free_crawl(world, cells, clean, tmp_path,
                                                              force):
    root = DataRoot(str(tmp_path / "data"))
    first, before, counters = crawl(world, cells, root, SETTINGS, HEAVY)
    assert counters.get("fault.truncated_jpeg", 0) > 5 and counters.get("fault.non_image", 0) > 5
    lost = {c: r.stats["retryable"] - clean[c].stats["retryable"] for c, r in first.items()}
    assert sum(lost.values()) > 0  # the faults did turn some good images into drops ...
    for cell in cells:  # ... and none of those was journalled as final
        assert not root.exists(layout.cell_journal("mapillary", cell))
    again, after, _ = crawl(world, cells, root, IngestSettings(
        target_per_cell=1000, workers=4, force=force))
    for cell in cells:
        assert again[cell].version == clean[cell].version  # byte-identical manifest
        assert again[cell].stats["downloaded"] <= lost[cell] + clean[cell].stats["retryable"]
    stored_first = set(before.valid)
    table = pl.concat([pl.read_parquet(root.path(r.manifest_relpath)) for r in again.values()])
    stored = set(table.filter(pl.col("sha256").is_not_null())["image_id"])
    assert stored_first <= stored  # nothing stored by the faulty crawl was lost ...
    assert not stored_first & set(after.valid)  # ... or downloaded again


def test_a_done_cell_is_reopened_only_for_its_retryable_drops_and_only_so_often(world, cells,
                                                                                 tmp_path):
    root = DataRoot(str(tmp_path / "data"))
    settings = IngestSettings(target_per_cell=1000, workers=4, retry_rounds=1)
    first, _, _ = crawl(world, cells[:1], root, settings)
    cell = cells[0]
    assert first[cell].stats["retryable"] > 0  # the demo world holds genuinely corrupt images
    second, _, _ = crawl(world, cells[:1], root, settings)
    assert not second[cell].skipped and second[cell].stats["retry_round"] == 1
    reasons = pl.read_parquet(root.path(second[cell].manifest_relpath))["drop_reason"]
    assert second[cell].stats["downloaded"] <= sum(r in RETRYABLE_REASONS for r in reasons)
    third, _, _ = crawl(world, cells[:1], root, settings)
    assert third[cell].skipped  # the retry rounds are spent
    stats = json.loads(root.read_bytes(layout.cell_stats("mapillary", cell)))
    assert stats["retry_round"] == 1
