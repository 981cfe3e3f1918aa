"""``geoscout cells`` and ``geoscout run``: register crawl cells and launch the jobs on the
real Dagster instance (``$DAGSTER_HOME``), so every run shows in the UI afterwards.

Settings come from the settings file (``pipeline/config_file.py``) through the same
definitions the UI loads. Runs execute in this process (``execute_in_process`` against the
instance) and print one line per step and a summary.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass

import dagster as dg

from geo_assets.errors import GeoscoutError, InputError
from pipeline.partitions import crawl_cells
from pipeline.sensors import (
    RANGE_END_TAG,
    RANGE_START_TAG,
    CellsCursor,
    places_tags,
    plan_cells,
)

TRAINED_MODEL = dg.AssetKey("trained_model")
EVALUATION_REPORT = dg.AssetKey("evaluation_report")
# The Dagster tag that marks a run launched by this CLI.
CLI_TAG = "geoscout/cli"


@dataclass
class Session:
    """The definitions (from the settings), the instance, and a clock for progress lines."""

    defs: dg.Definitions
    instance: dg.DagsterInstance
    start: float
    log_level: str = "WARNING"

    @property
    def settings(self):
        return self.defs.resources["settings"]

    def say(self, text: str) -> None:
        print(f"[{time.monotonic() - self.start:6.1f}s] {text}", flush=True)


def open_session(log_level: str = "WARNING") -> Session:
    from pipeline.definitions import build_definitions

    defs = build_definitions()
    return Session(defs, dg.DagsterInstance.get(), time.monotonic(), log_level)


def check_secrets(resources: dict[str, object]) -> None:
    """One clear line naming a secret's unset environment variable (enabled sources only)."""
    sources = set(resources["settings"].sources)
    for name in ("mapillary", "streetview"):
        resource = resources[name]
        if name not in sources or resource.demo_seed is not None:
            continue
        for field in type(resource).model_fields:
            value = getattr(resource, field)
            if isinstance(value, dg.EnvVar) and not os.environ.get(value.env_var_name):
                raise InputError(f"{value.env_var_name} is not set: export it ({name}."
                                 f"{field} in the settings file reads it)")


def _root_cause(error) -> str:
    """The innermost message of a step's error chain (the user's error, not Dagster's
    wrapper: "Error occurred while executing op ...")."""
    while error.cause is not None:
        error = error.cause
    return error.message.strip()


def run_job(defs: dg.Definitions, job_name: str, instance: dg.DagsterInstance, say,
            log_level: str, tags: dict, asset_selection: Sequence[dg.AssetKey] | None = None,
            ) -> dg.ExecuteInProcessResult:
    """Run ``job_name`` in process on ``instance``; ``say`` a line per finished step; a clear
    error naming the first failed step if the run fails (``geoscout run`` and ``demo``)."""
    result = defs.resolve_job_def(job_name).execute_in_process(
        instance=instance, tags=tags,
        asset_selection=list(asset_selection) if asset_selection else None,
        run_config={"loggers": {"console": {"config": {"log_level": log_level}}}},
        raise_on_error=False)
    for event in result.all_events:
        if event.event_type_value == "STEP_SUCCESS":
            say(f"  {event.step_key}: {event.event_specific_data.duration_ms / 1000:.1f}s")
    if not result.success:
        failure = next((e for e in result.all_events if e.event_type_value == "STEP_FAILURE"),
                       None)
        detail = f"{failure.step_key}: {_root_cause(failure.event_specific_data.error)}" \
            if failure else "see the UI"
        raise GeoscoutError(f"{job_name} (run {result.run_id}) failed: {detail}")
    return result


def execute(session: Session, job_name: str, *, tags: dict | None = None,
            asset_selection: Sequence[dg.AssetKey] | None = None) -> dg.ExecuteInProcessResult:
    """Run ``job_name`` on the instance; a line per finished step; a clear error if it fails."""
    result = run_job(session.defs, job_name, session.instance, session.say, session.log_level,
                     {CLI_TAG: "1", **(tags or {})}, asset_selection)
    n = sum(1 for e in result.all_events if e.event_type_value == "ASSET_MATERIALIZATION")
    session.say(f"{job_name}: run {result.run_id} succeeded, {n} materializations")
    return result


# --- cells -------------------------------------------------------------------------------------

def grid_cells(session: Session) -> list[str]:
    """The region's land cells at the crawl level, from the materialized grid."""
    from geo_assets import layout
    from geo_assets.grid import crawl_cells as land_crawl_cells
    from geo_assets.grid import load_grid

    root = session.settings.root()
    if not root.exists(layout.GRID_CELLS):
        raise InputError(f"no grid in {root.url}: run `geoscout run grid` first")
    return land_crawl_cells(load_grid(root), session.settings.crawl_level)


def add_cells(session: Session, cells: Sequence[str], from_grid: bool) -> list[str]:
    """Register ``cells`` (or the grid's land cells) as crawl_cells partitions; the new ones."""
    from geo_assets.cells import check_cell_id

    wanted = list(cells) + (grid_cells(session) if from_grid else [])
    if not wanted:
        raise InputError("no cells given: name cell ids or pass --grid")
    level = session.settings.crawl_level
    for cell in cells:
        if len(check_cell_id(cell)) != level:
            raise InputError(f"cell {cell!r} is at level {len(cell)}, not the crawl level "
                             f"{level} (settings.crawl_level)")
    known = set(session.instance.get_dynamic_partitions(crawl_cells.name))
    new = sorted(set(wanted) - known)
    if new:
        session.instance.add_dynamic_partitions(crawl_cells.name, new)
    return new


def cell_places_list(session: Session) -> list[tuple[str, bool, str]]:
    """(cell, crawled, its countries and bounds) in registration order (``cells list``)."""
    from geo_assets.cell_places import bounds_text, cell_places
    from geo_assets.cells import cells_bounds

    rows = cell_status(session)
    cells = [cell for cell, _ in rows]
    places = cell_places(cells)
    bounds = cells_bounds(cells) if cells else []
    return [(cell, done, f"{places[cell]} ({bounds_text(b)})")
            for (cell, done), b in zip(rows, bounds)]


def cell_status(session: Session) -> list[tuple[str, bool]]:
    """(cell, crawled by every source asset) in registration order."""
    registered = list(session.instance.get_dynamic_partitions(crawl_cells.name))
    done = crawled_cells(session)
    return [(cell, cell in done) for cell in registered]


def crawled_cells(session: Session) -> set[str]:
    from pipeline.assets.ingest import CELL_ASSETS

    sets = [session.instance.get_materialized_partitions(a.key) for a in CELL_ASSETS]
    return set.intersection(*sets)


# --- runs --------------------------------------------------------------------------------------

def run_crawl(session: Session, cells: Sequence[str] = (), again: bool = False) -> int:
    """Crawl ``cells`` (default: every registered cell not crawled yet) in batches of
    ``cells_per_run`` contiguous partitions; the number of runs."""
    check_secrets(session.defs.resources)
    registered = list(session.instance.get_dynamic_partitions(crawl_cells.name))
    if not registered:
        raise InputError("no crawl cells registered: `geoscout cells add --grid` (or name "
                         "cell ids)")
    missing = sorted(set(cells) - set(registered))
    if missing:
        raise InputError(f"cells {missing} are not registered: `geoscout cells add "
                         f"{' '.join(missing)}`")
    done = set() if again else crawled_cells(session)
    if cells:  # only the named cells: everything else counts as done
        done |= set(registered) - set(cells)
    plan = plan_cells([], registered, done, CellsCursor(), session.settings.cells_per_run,
                      session.settings.crawl_level)
    if not plan.batches:
        session.say("crawl: every registered cell is crawled (--again to crawl them anew)")
        return 0
    for i, (batch, places) in enumerate(zip(plan.batches, places_tags(plan.batches)), 1):
        session.say(f"crawl run {i}/{len(plan.batches)}: cells {batch[0]}..{batch[-1]} "
                    f"({len(batch)} cells: {next(iter(places.values()))})")
        execute(session, "ingest_cells_job",
                tags={RANGE_START_TAG: batch[0], RANGE_END_TAG: batch[-1], **places})
    session.say(f"crawl: {sum(map(len, plan.batches))} cells in {len(plan.batches)} runs")
    return len(plan.batches)


def latest_metadata(session: Session, key: dg.AssetKey) -> dict:
    event = session.instance.get_latest_materialization_event(key)
    if event is None or event.asset_materialization is None:
        return {}
    return {k: v.value for k, v in event.asset_materialization.metadata.items()}


def print_metadata(metadata: dict, names: Sequence[str]) -> None:
    for name in names:
        if name in metadata:
            value = metadata[name]
            text = f"{value:.4g}" if isinstance(value, float) else str(value)
            print(f"  {name:28s} {text}")
