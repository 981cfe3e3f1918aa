"""Shards written in parallel: a build split into parts run by separate processes or pods.

Each part plans the whole build (deterministic: the same inputs and the same previous build give
the same plan everywhere), writes every ``n_parts``-th shard of it straight into the shard folder
(tar, then its stats, each renamed into place), and returns. Once every part is done,
``assemble_shards`` checks each planned shard's stats against the plan (``plan_sha256``: the
samples' keys and records, image size and quality) and writes ``contents.parquet`` and
``index.json`` last, exactly as ``build_shards`` does, so the output is byte-identical to the
single-process build. A part that fails can simply run again. In the Dagster graph the parts are
the partitions of the ``shard_parts`` asset (one step, and one pod under ``k8s_job_executor``,
each); ``docs/operations.md`` says why that engine.

    python -m geo_assets.shard_parts part --table T.parquet --levels 1,3 --out DIR --part 0 --n-parts 4
    python -m geo_assets.shard_parts assemble --table T.parquet --levels 1,3 --out DIR

Without ``--part``, the part number is ``$JOB_COMPLETION_INDEX``: a Kubernetes Indexed Job
(``completionMode: Indexed``, ``completions`` = ``parallelism`` = n) runs the parts as its pods.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path

import polars as pl

from geo_assets import layout
from geo_assets.errors import InputError
from geo_assets.settings import ShardSettings
from geo_assets.shards import (
    ShardBuild,
    ShardPlan,
    finish_build,
    plan_build,
    plan_fingerprint,
    write_plans,
)


def part_plans(plans: list[ShardPlan], part: int, n_parts: int) -> list[ShardPlan]:
    """The shards that part ``part`` of ``n_parts`` writes: every n-th in name order."""
    if n_parts < 1 or not 0 <= part < n_parts:
        raise InputError(f"shard part {part} of {n_parts}: use 0 <= part < n_parts")
    return plans[part::n_parts]


def build_shard_part(table: pl.DataFrame, levels: list[int], out_dir: Path,
                     settings: ShardSettings, part: int, n_parts: int,
                     incremental: bool = True) -> list[dict]:
    """One part of a parallel build: plan as ``build_shards`` does, write this part's shards
    straight to ``out_dir`` (atomic renames); returns their stats. Safe to re-run."""
    plan = plan_build(table, levels, out_dir, settings, incremental)
    return write_plans(out_dir, part_plans(plan.plans, part, n_parts), settings)


def _part_stats(out_dir: Path, plan: ShardPlan, settings: ShardSettings) -> dict:
    path = out_dir / layout.shard_stats_file(plan.name)
    stats = json.loads(path.read_text()) if path.exists() else {}
    if stats.get("plan_sha256") != plan_fingerprint(plan, settings):
        raise InputError(f"shard {plan.name}: {'stale' if stats else 'no'} {path.name} for "
                         "this build: the part that writes it has not finished; run every "
                         "part (build_shard_part) before assembling")
    return stats


def assemble_shards(table: pl.DataFrame, levels: list[int], out_dir: Path,
                    settings: ShardSettings, incremental: bool = True) -> ShardBuild:
    """After every part: ``contents.parquet`` and ``index.json`` from the parts' stats, byte for
    byte what ``build_shards`` writes for the same inputs; stale shards removed."""
    start = time.perf_counter()
    plan = plan_build(table, levels, out_dir, settings, incremental)
    written = [_part_stats(out_dir, p, settings) for p in plan.plans]
    return finish_build(out_dir, plan, written, levels, settings, start)


def _index_from_env() -> int:
    raw = os.environ.get("JOB_COMPLETION_INDEX", "0").strip()
    if not raw.isdigit():
        raise InputError(f"JOB_COMPLETION_INDEX={raw!r} is not a part number; pass --part")
    return int(raw)


def cli(argv: list[str] | None = None) -> int:
    """Run one part, or the assembly, on a shard input table stored as Parquet."""
    p = argparse.ArgumentParser("python -m geo_assets.shard_parts", description=cli.__doc__)
    p.add_argument("step", choices=["part", "assemble"])
    p.add_argument("--table", required=True, help="Parquet file: the shard input table")
    p.add_argument("--levels", required=True, help="comma-separated hierarchy levels")
    p.add_argument("--out", required=True, help="the shard folder")
    p.add_argument("--part", type=int, default=None,
                   help="this part's number (default: $JOB_COMPLETION_INDEX, else 0)")
    p.add_argument("--n-parts", type=int, default=1)
    p.add_argument("--full", action="store_true", help="not incremental: rewrite every shard")
    p.add_argument("--settings", default="{}", help="ShardSettings fields as JSON")
    args = p.parse_args(argv)
    table = pl.read_parquet(args.table)
    levels = [int(v) for v in args.levels.split(",")]
    fields = {f.name for f in dataclasses.fields(ShardSettings)}
    given = json.loads(args.settings)
    unknown = sorted(set(given) - fields)
    if unknown:
        raise InputError(f"--settings: unknown ShardSettings fields {unknown}")
    settings = ShardSettings(**given)
    out = Path(args.out)
    if args.step == "part":
        part = args.part if args.part is not None else _index_from_env()
        stats = build_shard_part(table, levels, out, settings, part, args.n_parts,
                                 not args.full)
        print(json.dumps({"part": part, "shards": [s["name"] for s in stats]}))
    else:
        build = assemble_shards(table, levels, out, settings, not args.full)
        print(json.dumps({"shards": len(build.index["shards"]),
                          "total_count": build.index["total_count"]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(cli())
