"""Shards written in parallel: a build split into parts run by separate processes or pods.

Each part plans the whole build (deterministic: the same inputs and the same previous build give
the same plan everywhere), writes every ``n_parts``-th shard of it, and returns. Once every part
is done, ``assemble_shards`` checks each planned shard's stats against the plan (``plan_sha256``:
the samples' keys and records, image size and quality) and writes ``contents.parquet`` and
``index.json`` last, exactly as ``build_shards`` does, so the output is byte-identical to the
single-process build. A part that fails can simply run again. The parts run as the pods of a
Kubernetes Indexed Job; ``docs/operations.md`` says why that engine, and how a partitioned
Dagster asset could run them instead.

The shard folder is a local path or an fsspec URL (``s3://bucket/.../datasets/shards``). On a
local folder the parts write straight into it (tar, then stats, each renamed into place). On a
bucket a part reads the previous build's index and contents (and the old tars it relabels) into
a local stage (``DataRoot.staged``), writes its tars and stats there, and uploads them, one PUT
per object, the stats after every tar: a part cut off midway leaves shards without stats, which
the assembly reports as not finished. The assembly fetches the planned shards' stats, and
uploads ``contents.parquet`` then ``index.json``, then deletes the shards the build dropped.

    python -m geo_assets.shard_parts part --table T.parquet --levels 1,3 --out DIR --part 0 --n-parts 4
    python -m geo_assets.shard_parts assemble --table T.parquet --levels 1,3 --out s3://b/p/shards

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
from geo_assets.storage import DataRoot, local_copy


def part_plans(plans: list[ShardPlan], part: int, n_parts: int) -> list[ShardPlan]:
    """The shards that part ``part`` of ``n_parts`` writes: every n-th in name order."""
    if n_parts < 1 or not 0 <= part < n_parts:
        raise InputError(f"shard part {part} of {n_parts}: use 0 <= part < n_parts")
    return plans[part::n_parts]


def build_shard_part(table: pl.DataFrame, levels: list[int], out_dir: str | Path,
                     settings: ShardSettings, part: int, n_parts: int,
                     incremental: bool = True) -> list[dict]:
    """One part of a parallel build: plan as ``build_shards`` does, write this part's shards
    into ``out_dir`` (a folder or an fsspec URL; see the module docstring); returns their
    stats. Safe to re-run: the same inputs give the same objects."""
    part_plans([], part, n_parts)  # a bad part number fails before any download
    root = DataRoot(str(out_dir))
    with root.staged([layout.SHARD_INDEX_FILE, layout.SHARD_CONTENTS_FILE]) as local:
        plan = plan_build(table, levels, local, settings, incremental)
        mine = part_plans(plan.plans, part, n_parts)
        root.fetch([layout.shard_file(p.name) for p in mine if p.rewrite], local)
        stats = write_plans(local, mine, settings)
        root.publish(local, [layout.shard_file(p.name) for p in mine])
        root.publish(local, [layout.shard_stats_file(p.name) for p in mine])  # last: done
    return stats


def _part_stats(out_dir: Path, plan: ShardPlan, settings: ShardSettings) -> dict:
    path = out_dir / layout.shard_stats_file(plan.name)
    stats = json.loads(path.read_text()) if path.exists() else {}
    if stats.get("plan_sha256") != plan_fingerprint(plan, settings):
        raise InputError(f"shard {plan.name}: {'stale' if stats else 'no'} {path.name} for "
                         "this build: the part that writes it has not finished; run every "
                         "part (build_shard_part) before assembling")
    return stats


def assemble_shards(table: pl.DataFrame, levels: list[int], out_dir: str | Path,
                    settings: ShardSettings, incremental: bool = True) -> ShardBuild:
    """After every part: ``contents.parquet`` and ``index.json`` from the parts' stats, byte for
    byte what ``build_shards`` writes for the same inputs; stale shards removed."""
    start = time.perf_counter()
    root = DataRoot(str(out_dir))
    index, contents = layout.SHARD_INDEX_FILE, layout.SHARD_CONTENTS_FILE
    with root.staged([index, contents], [contents, index]) as local:  # the index last
        plan = plan_build(table, levels, local, settings, incremental)
        if not root.is_local:
            done = set(root.glob(layout.shard_stats_file("*")))
            root.fetch([f for f in map(layout.shard_stats_file, (p.name for p in plan.plans))
                        if f in done], local)
        written = [_part_stats(local, p, settings) for p in plan.plans]
        build = finish_build(local, plan, written, levels, settings, start)
    if not root.is_local:  # after the index: the old one may still name these
        root.remove([f for name in build.deleted
                     for f in (layout.shard_file(name), layout.shard_stats_file(name))])
    return build


def _index_from_env() -> int:
    raw = os.environ.get("JOB_COMPLETION_INDEX", "0").strip()
    if not raw.isdigit():
        raise InputError(f"JOB_COMPLETION_INDEX={raw!r} is not a part number; pass --part")
    return int(raw)


def cli(argv: list[str] | None = None) -> int:
    """Run one part, or the assembly, on a shard input table stored as Parquet."""
    p = argparse.ArgumentParser("python -m geo_assets.shard_parts", description=cli.__doc__)
    p.add_argument("step", choices=["part", "assemble"])
    p.add_argument("--table", required=True,
                   help="Parquet file (path or fsspec URL): the shard input table")
    p.add_argument("--levels", required=True, help="comma-separated hierarchy levels")
    p.add_argument("--out", required=True, help="the shard folder: a path or an fsspec URL")
    p.add_argument("--part", type=int, default=None,
                   help="this part's number (default: $JOB_COMPLETION_INDEX, else 0)")
    p.add_argument("--n-parts", type=int, default=1)
    p.add_argument("--full", action="store_true", help="not incremental: rewrite every shard")
    p.add_argument("--settings", default="{}", help="ShardSettings fields as JSON")
    args = p.parse_args(argv)
    with local_copy(args.table) as path:  # a local file or a URL (fetched into the stage)
        table = pl.read_parquet(path)
    levels = [int(v) for v in args.levels.split(",")]
    fields = {f.name for f in dataclasses.fields(ShardSettings)}
    given = json.loads(args.settings)
    unknown = sorted(set(given) - fields)
    if unknown:
        raise InputError(f"--settings: unknown ShardSettings fields {unknown}")
    settings = ShardSettings(**given)
    out = args.out
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
