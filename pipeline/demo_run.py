"""``geoscout demo``: the whole graph on the built-in demo world, through Dagster.

    geoscout demo [--seed 0] [--preset demo|tiny] [--data-root DIR] [--fresh] [-q]

Runs on the real Dagster instance (``$DAGSTER_HOME``, the project's ``.dagster_home`` by
default), so every run shows in ``dagster dev`` afterwards: grid -> crawl-cell partitions
(registered by the crawl-cells sensor) -> per-cell ingestion in batches against one demo
server on loopback -> image_manifest -> datasets -> trained_model -> evaluation_report.
Stages whose assets do not exist yet are skipped with a line saying so.
"""

import argparse
import json
import shutil
import subprocess
import sys
import time
import warnings
from collections.abc import Sequence
from contextlib import ExitStack
from typing import Self

import dagster as dg

from geo_assets.errors import DataUnavailableError, GeoscoutError, InputError
from geo_assets.storage import default_data_root
from pipeline import constants
from pipeline.partitions import crawl_cells
from pipeline.resources import demo_servers

EVALUATION_REPORT = dg.AssetKey("evaluation_report")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="geoscout demo",
        description="Run the whole geoscout graph on the built-in demo world (no keys, no "
        "network) through Dagster, then print the report's path and headline metrics.")
    p.add_argument("--seed", type=int, default=0, help="demo world seed (default: 0)")
    p.add_argument("--preset", choices=["demo", "tiny"], default="demo",
                   help="demo world size (default: demo; tiny for a quick check)")
    p.add_argument("--data-root", default=None,
                   help="data root (default: $GEOSCOUT_DATA_ROOT, else .geoscout/data)")
    p.add_argument("--fresh", action="store_true",
                   help="delete the data root and the registered crawl cells first")
    p.add_argument("--cells-per-run", type=int, default=None,
                   help="crawl cells per ingestion run (default: the demo setting, 16)")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="only this command's stage lines, not the assets' progress logs")
    return p


class _Clock:
    def __init__(self) -> None:
        self.start = time.monotonic()
        self.stages: list[tuple[str, float]] = []

    def stage(self, name: str, seconds: float) -> None:
        self.stages.append((name, seconds))

    def say(self, text: str) -> None:
        print(f"[{time.monotonic() - self.start:7.1f}s] {text}", flush=True)


def _groups(defs: dg.Definitions) -> dict[str, set[dg.AssetKey]]:
    graph = defs.resolve_asset_graph()
    out: dict[str, set[dg.AssetKey]] = {}
    for key in graph.materializable_asset_keys:
        out.setdefault(graph.get(key).group_name, set()).add(key)
    return out


def _execute(defs: dg.Definitions, job_name: str, instance: dg.DagsterInstance,
             clock: _Clock, log_level: str, tags: dict | None = None) -> dg.ExecuteInProcessResult:
    from pipeline.commands.runs import run_job

    return run_job(defs, job_name, instance, clock.say, log_level,
                   {"geoscout/demo": "1", **(tags or {})})


def _forget_cells(instance: dg.DagsterInstance, clock: _Clock) -> None:
    keys = instance.get_dynamic_partitions(crawl_cells.name)
    for key in keys:
        instance.delete_dynamic_partition(crawl_cells.name, key)
    if keys:
        clock.say(f"removed {len(keys)} registered crawl-cell partitions")


def _register_cells(defs: dg.Definitions, instance: dg.DagsterInstance, settings,
                    clock: _Clock) -> list[dg.RunRequest]:
    """Evaluate the crawl-cells sensor once and apply what it asks for."""
    sensor = defs.resolve_sensor_def("crawl_cells_sensor")
    with dg.build_sensor_context(instance=instance, resources={"settings": settings}) as ctx:
        result = sensor(ctx)
    skipped = getattr(result, "skip_message", None)  # a SkipReason: no grid, level too deep
    if skipped:
        raise DataUnavailableError(f"crawl_cells_sensor skipped: {skipped}")
    for request in result.dynamic_partitions_requests:
        instance.add_dynamic_partitions(crawl_cells.name, list(request.partition_keys))
        clock.say(f"registered {len(request.partition_keys)} crawl cells at level "
                  f"{settings.crawl_level}")
    if not result.run_requests:
        reason = result.skip_reason.skip_message if result.skip_reason else "no new cells"
        clock.say(f"crawl cells: nothing to crawl ({reason})")
    return list(result.run_requests)


class _ServerProcess:
    """One demo server (``geoscout demo-server``) in a child process for the whole run, so
    that rendering the demo's images does not share a GIL with the crawl."""

    def __init__(self, seed: int, preset: str) -> None:
        code = "import sys; from geo_assets.demo.server import cli; sys.exit(cli(sys.argv[1:]))"
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code, "--port", "0", "--seed", str(seed),
             "--preset", preset], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if not line.startswith("demo server: "):
            self.close()
            raise GeoscoutError(f"the demo server did not start (said {line.strip()!r})")
        self.url = line.split()[2]

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


WORLD_MARKER = "demo_world.json"


def _check_world(root, seed: int, preset: str) -> None:
    """One data root holds one demo world: refuse to mix seeds or presets."""
    want = {"seed": seed, "preset": preset}
    if root.exists(WORLD_MARKER):
        have = json.loads(root.read_bytes(WORLD_MARKER))
        if have != want:
            raise InputError(
                f"data root {root.url} holds the demo world {have}, not {want}: add --fresh "
                "to start over, or pass another --data-root")
    else:
        root.write_bytes(WORLD_MARKER, json.dumps(want).encode())


def _restore_server(seed: int, preset: str, previous: object | None) -> None:
    if previous is None:
        demo_servers.forget(seed, preset)
    else:
        demo_servers.use(seed, preset, previous)


def _headline(instance: dg.DagsterInstance) -> None:
    event = instance.get_latest_materialization_event(EVALUATION_REPORT)
    if event is None or event.asset_materialization is None:
        return
    metadata = event.asset_materialization.metadata
    report = metadata.get("report_path")
    print(f"\nReport: {report.value if report is not None else '(no report_path metadata)'}")
    print("Headline metrics (test split)")
    for name, value in metadata.items():
        raw = value.value
        if isinstance(raw, float):
            print(f"  {name:28s} {raw:.4g}")
        elif isinstance(raw, int) and not isinstance(raw, bool):
            print(f"  {name:28s} {raw}")


def run_demo(seed: int, preset: str, data_root: str, fresh: bool,
             cells_per_run: int | None, quiet: bool) -> int:
    from pipeline.definitions import build_definitions, demo_resources
    from pipeline.platforms import apply_pool_limits

    clock = _Clock()
    level = "WARNING" if quiet else "INFO"
    resources = demo_resources(seed, preset, data_root)
    settings = resources["settings"]
    if cells_per_run:
        settings = settings.model_copy(update={"cells_per_run": cells_per_run})
        resources["settings"] = settings
    defs = build_definitions(resources=resources)
    groups = _groups(defs)
    instance = dg.DagsterInstance.get()
    apply_pool_limits(instance)
    clock.say(f"demo world seed={seed} preset={preset}; data root {data_root}; "
              f"Dagster instance {instance.root_directory}")
    if fresh and "://" not in data_root:
        shutil.rmtree(data_root, ignore_errors=True)
        clock.say(f"fresh start: removed {data_root}")
    if fresh or not settings.root().exists("grid/grid_cells.parquet"):
        _forget_cells(instance, clock)  # cells registered for data that is gone
    _check_world(settings.root(), seed, preset)

    def stage(name: str, job_name: str, *needed: str) -> None:
        missing = [g for g in needed if not groups.get(g)]
        for group in missing:
            clock.say(f"{name}: no assets in group '{group}' yet, skipped")
        present = set().union(*(groups.get(g, set()) for g in needed))
        if not present:
            return
        t0 = time.monotonic()
        clock.say(f"{name}: {job_name}")
        _execute(defs, job_name, instance, clock, level)
        clock.stage(name, time.monotonic() - t0)

    with ExitStack() as stack:
        server = stack.enter_context(_ServerProcess(seed, preset))
        previous = demo_servers.current(seed, preset)
        demo_servers.use(seed, preset, server)
        stack.callback(_restore_server, seed, preset, previous)
        clock.say(f"demo server on {server.url}")

        stage("grid", "grid_job", constants.GRID)
        t0 = time.monotonic()
        requests = _register_cells(defs, instance, settings, clock)
        for i, request in enumerate(requests, 1):
            tags = request.tags
            clock.say(f"ingest run {i}/{len(requests)}: crawl cells "
                      f"{tags['dagster/asset_partition_range_start']}.."
                      f"{tags['dagster/asset_partition_range_end']} "
                      f"({tags.get('geoscout/cells', '?')} cells: "
                      f"{tags.get('geoscout/places', '?')})")
            _execute(defs, "ingest_cells_job", instance, clock, level, tags=dict(tags))
        clock.stage("ingest", time.monotonic() - t0)
        stage("manifest + datasets", "dataset_job", constants.INGEST, constants.DATASET)
        stage("train + evaluate", "training_job", constants.TRAIN, constants.EVAL)

    print("\nWall time per stage")
    for name, seconds in clock.stages:
        print(f"  {name:22s} {seconds:7.1f}s")
    print(f"  {'total':22s} {time.monotonic() - clock.start:7.1f}s")
    _headline(instance)
    print("\nSee the runs and assets: dagster dev (then http://127.0.0.1:3000)")
    return 0


def cli(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    # Dagster's notices about beta/preview APIs (backfill policies, Pipes) are not news here.
    warnings.filterwarnings("ignore", category=dg.BetaWarning)
    warnings.filterwarnings("ignore", category=dg.PreviewWarning)
    return run_demo(args.seed, args.preset, args.data_root or default_data_root(), args.fresh,
                    args.cells_per_run, args.quiet)
