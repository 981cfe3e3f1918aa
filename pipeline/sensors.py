"""Sensors: register crawl cells as dynamic partitions and backfill them in batches; the
automation sensor that keeps the manifest and datasets fresh (training is never automated).

The crawl-cells sensor reads the materialized grid (``grid_cells``), takes its land cells at
the configured crawl level, adds the ones not registered yet as ``crawl_cells`` partitions,
and requests one run per batch of ``cells_per_run`` cells. Cells appear when the region
grows or the crawl level deepens (re-materialize the grid: the grid schedule does it).
"""


import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import dagster as dg

from geo_assets import layout
from geo_assets.errors import InputError
from geo_assets.grid import crawl_cells as land_crawl_cells
from geo_assets.grid import load_grid
from pipeline.constants import EVAL, FORCE_TAG, TRAIN
from pipeline.partitions import crawl_cells
from pipeline.resources import GeoscoutSettings

RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"
# The countries of a crawl run's cells, for a person reading the Runs page. Dagster 1.13 has
# no display name for a partition key: the GraphQL schema serves keys as bare strings
# (dagster_graphql/schema/partition_keys.py: PartitionKeyConnection.results), the
# ``Partition(value, name)`` label is deprecated for string keys, and a human-readable label
# was declined for now (dagster-io/dagster#16999). So the place goes on the run as a tag, and
# on each partition's materialization as metadata (pipeline/assets/ingest.py).
PLACES_TAG = "geoscout/places"
PLACES_TAG_MAX_CHARS = 120


@dataclass(frozen=True)
class CellsCursor:
    """JSON cursor: how many registered cells (in registration order) have been requested,
    and the crawl level and cell count seen last."""

    requested: int = 0
    level: int | None = None
    n_cells: int = 0

    @classmethod
    def parse(cls, raw: str | None) -> "CellsCursor":
        return cls(**json.loads(raw)) if raw else cls()

    def dumps(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


@dataclass(frozen=True)
class CellsPlan:
    new_cells: list[str]            # to register now, sorted
    batches: list[list[str]]        # contiguous in registration order, each <= batch_size
    cursor: CellsCursor


def plan_cells(wanted: Sequence[str], registered: Sequence[str], done: set[str],
               cursor: CellsCursor, batch_size: int, level: int) -> CellsPlan:
    """Which cells to register and which to request, in batches of contiguous partitions.

    ``registered`` is the partition keys in registration order; cells past
    ``cursor.requested`` have never been requested (a tick that registered them but failed
    before its runs were submitted asks again, with the same run keys). Registered ``done``
    cells (every ingestion asset materialized) are not requested again; new cells always are,
    even if an earlier registration of theirs was crawled (a fresh data root, say).
    """
    known = set(registered)
    new_cells = sorted(set(wanted) - known)
    order = list(registered) + new_cells
    batches: list[list[str]] = []
    segment: list[str] = []
    for key in order[min(cursor.requested, len(registered)):]:
        if key in done and key in known:  # a new (or re-added) cell is always crawled
            batches += _chunks(segment, batch_size)
            segment = []
        else:
            segment.append(key)
    batches += _chunks(segment, batch_size)
    return CellsPlan(new_cells, batches, CellsCursor(len(order), level, len(order)))


def _chunks(keys: list[str], size: int) -> list[list[str]]:
    return [keys[i:i + size] for i in range(0, len(keys), max(1, size))]


def places_tags(batches: Sequence[Sequence[str]]) -> list[dict[str, str]]:
    """Per batch of cells, the ``PLACES_TAG`` naming their countries (one country lookup for
    all batches)."""
    from geo_assets.cell_places import cell_countries, places_summary

    by_cell = cell_countries(sorted({c for b in batches for c in b}))
    return [{PLACES_TAG: places_summary(by_cell, b, PLACES_TAG_MAX_CHARS)} for b in batches]


def batch_run_request(batch: Sequence[str], since: int = 0,
                      extra_tags: dict[str, str] | None = None) -> dg.RunRequest:
    """One run over a contiguous range of crawl cells. The run key names its exact cells and
    the cursor it was planned from: a retried tick asks for the same keys (Dagster launches
    them once), while cells deleted and registered again get new keys."""
    digest = hashlib.sha256(",".join(batch).encode()).hexdigest()[:12]
    return dg.RunRequest(
        run_key=f"crawl-cells-{since}-{batch[0]}-{batch[-1]}-{len(batch)}-{digest}",
        tags={RANGE_START_TAG: batch[0], RANGE_END_TAG: batch[-1],
              "geoscout/cells": str(len(batch)), **(extra_tags or {})},
    )


def _done_cells(instance: dg.DagsterInstance, asset_keys: Sequence[dg.AssetKey]) -> set[str]:
    sets = [instance.get_materialized_partitions(key) for key in asset_keys]
    return set.intersection(*sets) if sets else set()


def wanted_cells(root, crawl_level: int) -> tuple[list[str], set[str]]:
    """The cells to crawl and the cells to retire: the crawl plan's cells (children of dense
    cells included) and its split parents when a plan at ``crawl_level`` is stored, else the
    grid's land cells at ``crawl_level``."""
    from geo_assets.plan import read_plan

    grid_cells = land_crawl_cells(load_grid(root), crawl_level)
    table = read_plan(root)
    if table is None or set(table["crawl_cell"].to_list()) - set(grid_cells) or \
            any(len(c) != crawl_level for c in table["crawl_cell"].unique()):
        return grid_cells, set()  # no plan, or one made for another grid or level
    cells = table["cell_id"].to_list()
    return cells, set(grid_cells) - set(cells)


def retire_cells(registered: list[str], retired: set[str], cursor: CellsCursor
                 ) -> tuple[list[str], CellsCursor, list[str]]:
    """Registered cells less the retired ones (their partitions deleted; stored images and
    cell manifests stay in the data root), with the cursor moved to match."""
    retire = sorted(k for k in registered if k in retired)
    if not retire:
        return registered, cursor, []
    kept = [k for k in registered if k not in retired]
    done = sum(k not in retired for k in registered[:cursor.requested])
    return kept, CellsCursor(done, cursor.level, len(kept)), retire


def recovery_requests(root, settings: GeoscoutSettings, registered: Sequence[str],
                      batches: Sequence[Sequence[str]], now: float | None = None
                      ) -> list[dg.RunRequest]:
    """One run per registered cell that is due again: failed cells whose backoff is over
    (run key per attempt, so each retry launches once) and stale cells (older than
    ``recrawl_max_age_days``; re-crawled with the force tag, images kept)."""
    from geo_assets.crawl_state import STALE, due_cells

    in_batches = {c for b in batches for c in b}
    todo = [c for c in registered if c not in in_batches]
    out = []
    due = due_cells(root, list(settings.sources), todo, settings.recovery_settings(), now)
    for state, places in zip(due, places_tags([[s.cell_id] for s in due])):
        stale = state.state == STALE
        key = f"recrawl-{state.cell_id}-{int(state.crawled_at or 0)}" if stale else \
            f"retry-{state.cell_id}-{state.attempts}"
        tags = {"geoscout/retry": str(state.attempts), "geoscout/cells": "1", **places}
        if stale:
            tags = {FORCE_TAG: "true", "geoscout/cells": "1", **places}
        out.append(dg.RunRequest(run_key=key, partition_key=state.cell_id, tags=tags))
    return out


def make_crawl_cells_sensor(
    job: dg.JobDefinition,  # or the unresolved job that define_asset_job returns
    asset_keys: Sequence[dg.AssetKey],
    *,
    name: str = "crawl_cells_sensor",
    minimum_interval_seconds: int = 300,
    default_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.RUNNING,
) -> dg.SensorDefinition:
    """Sensor that registers new land cells of the region as ``crawl_cells`` partitions and
    requests ``job`` over them in batches (``settings.cells_per_run`` cells per run)."""

    @dg.sensor(name=name, job=job, minimum_interval_seconds=minimum_interval_seconds,
               default_status=default_status,
               description="Registers the region's land cells at the crawl level as crawl_cells "
               "partitions and backfills new ones in batches.")
    def _sensor(context: dg.SensorEvaluationContext, settings: GeoscoutSettings):
        root = settings.root()
        if not root.exists(layout.GRID_CELLS):
            return dg.SkipReason("grid_cells is not materialized yet: materialize the grid "
                                 "group (or wait for grid_refresh_schedule)")
        try:
            wanted, retired = wanted_cells(root, settings.crawl_level)
        except InputError as exc:  # e.g. crawl_level deeper than the grid
            return dg.SkipReason(str(exc))
        registered, cursor, retire = retire_cells(
            list(context.instance.get_dynamic_partitions(crawl_cells.name)), retired,
            CellsCursor.parse(context.cursor))
        plan = plan_cells(wanted, registered, _done_cells(context.instance, asset_keys),
                          cursor, settings.cells_per_run, settings.crawl_level)
        again = recovery_requests(root, settings, registered, plan.batches)
        if not plan.new_cells and not plan.batches and not retire and not again:
            return dg.SensorResult(
                skip_reason=f"all {len(wanted)} crawl cells at level {settings.crawl_level} "
                "are registered and requested", cursor=plan.cursor.dumps())
        context.log.info(f"{len(again)} cells retried or refreshed; "
                         f"{len(plan.new_cells)} new crawl cells, {len(retire)} retired "
                         f"(split by the crawl plan); requesting "
                         f"{sum(map(len, plan.batches))} cells in {len(plan.batches)} runs")
        requests = [crawl_cells.build_delete_request(retire)] if retire else []
        if plan.new_cells:
            requests.append(crawl_cells.build_add_request(plan.new_cells))
        return dg.SensorResult(
            run_requests=[batch_run_request(b, cursor.requested, places) for b, places
                          in zip(plan.batches, places_tags(plan.batches))] + again, dynamic_partitions_requests=requests, cursor=plan.cursor.dumps(),
        )

    return _sensor


def make_automation_sensor(
    crawl_keys: Sequence[dg.AssetKey] = (), *,
    default_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.RUNNING,
) -> dg.AutomationConditionSensorDefinition:
    """Evaluates the assets' automation conditions: the manifest and datasets refresh once
    new cells land (eager). Training and evaluation are left out, so a model is only ever
    trained on request; so are the per-cell ingestion assets (``crawl_keys``), which only the
    crawl-cells sensor requests: one crawl request per cell at a time, never a second run
    for a partition a batch run is already crawling."""
    return dg.AutomationConditionSensorDefinition(
        "geoscout_automation",
        target=(dg.AssetSelection.all() - dg.AssetSelection.groups(TRAIN, EVAL)
                - dg.AssetSelection.assets(*crawl_keys)),
        default_status=default_status,
        minimum_interval_seconds=60,
        description="Refreshes the manifest and datasets when crawled cells land; never "
        "crawls (the crawl-cells sensor does) and never trains.",
    )
