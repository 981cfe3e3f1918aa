"""Orchestration overhead of ``dataset_job``: its wall time against the sum of its steps' own
work (Dagster's STEP_SUCCESS durations), on the demo dataset.

    .venv/bin/python bench/orchestration.py [--preset tiny|demo] [--data-root DIR]

Builds the demo world's grid and crawls its cells first (not timed; a rerun on the same data
root resumes), then runs ``dataset_job`` on a throw-away Dagster instance and prints
``RESULT orchestration overhead_fraction=<(wall - work) / wall> target=0.3``. The issue's
figure before the in-process executor: 2 min 47 s of wall for about 35 s of work (0.79).
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings

import dagster as dg

TARGET = 0.3


def prepare(defs: dg.Definitions, instance: dg.DagsterInstance, settings, clock) -> None:
    """Grid, crawl cells and their crawls: the dataset job's inputs."""
    from pipeline.demo_run import _execute, _register_cells

    _execute(defs, "grid_job", instance, clock, "WARNING")
    for request in _register_cells(defs, instance, settings, clock):
        _execute(defs, "ingest_cells_job", instance, clock, "WARNING", tags=dict(request.tags))


def measure(defs: dg.Definitions, instance: dg.DagsterInstance) -> tuple[float, float, int]:
    """(wall seconds, sum of step seconds, steps) of one dataset_job run."""
    job = defs.resolve_job_def("dataset_job")
    start = time.perf_counter()
    result = job.execute_in_process(
        instance=instance, raise_on_error=True,
        run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}})
    wall = time.perf_counter() - start
    steps = [e.event_specific_data.duration_ms / 1000 for e in result.all_events
             if e.event_type_value == "STEP_SUCCESS"]
    return wall, sum(steps), len(steps)


def main() -> None:
    from pipeline.definitions import build_definitions, demo_resources
    from pipeline.demo_run import _Clock, _ServerProcess
    from pipeline.resources import demo_servers

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=["tiny", "demo"], default="tiny")
    parser.add_argument("--data-root", default=None, help="default: a temporary folder")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    with tempfile.TemporaryDirectory() as tmp, dg.instance_for_test() as instance:
        resources = demo_resources(0, args.preset, args.data_root or f"{tmp}/data")
        defs = build_definitions(resources=resources)
        clock = _Clock()
        with _ServerProcess(0, args.preset) as server:
            demo_servers.use(0, args.preset, server)
            prepare(defs, instance, resources["settings"], clock)
            demo_servers.forget(0, args.preset)
        wall, work, n = measure(defs, instance)
    overhead = (wall - work) / wall
    print(f"dataset_job ({args.preset} demo world): wall {wall:.1f} s, {n} steps' own work "
          f"{work:.1f} s")
    print(f"RESULT orchestration overhead_fraction={overhead:.3f} target={TARGET}")


if __name__ == "__main__":
    main()
