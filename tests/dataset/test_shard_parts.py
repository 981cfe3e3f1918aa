"""Shards written by 4 separate processes (as 4 pods would), then one assembly step: the same
bytes as the single-process build, for a fresh build and for an incremental one."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from geo_assets import layout
from geo_assets.errors import InputError
from geo_assets.settings import ShardSettings
from geo_assets.shard_parts import assemble_shards, build_shard_part, part_plans
from geo_assets.shards import build_shards, plan_build, verify_shards
from tests.conftest import shared_data_path
from tests.dataset.helpers import croatia_table, with_fake_labels

LEVELS = [1, 3]
SETTINGS = {"shard_size": 5, "workers": 1}
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def table() -> pl.DataFrame:
    t = with_fake_labels(croatia_table(shared_data_path("real", "croatia_streetview"),
                                       limit=40), LEVELS)
    place = t["group_id"].rank("dense").to_numpy()
    return t.with_columns(split=pl.Series(["test" if p % 4 == 0 else "train" for p in place]),
                          fold=pl.Series([-1 if p % 4 == 0 else int(p % 2) for p in place]))


def run_parts(table: pl.DataFrame, out: Path, n_parts: int = 4) -> list[int]:
    """Each part in its own Python process, all at once; then nothing else shared."""
    path = out.parent / f"{out.name}-input.parquet"
    table.write_parquet(path)
    base = [sys.executable, "-m", "geo_assets.shard_parts", "part", "--table", str(path),
            "--levels", ",".join(map(str, LEVELS)), "--out", str(out),
            "--n-parts", str(n_parts), "--settings", json.dumps(SETTINGS)]
    procs = [subprocess.Popen([*base, "--part", str(i)], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(n_parts)]
    written = []
    for proc in procs:
        out_text, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-2000:]
        written.append(len(json.loads(out_text.splitlines()[-1])["shards"]))
    return written


def same_bytes(a: Path, b: Path) -> list[str]:
    """Names of the tars, index and contents under ``a``; fails on any byte difference."""
    names = sorted(p.name for p in a.iterdir() if not p.name.endswith(".stats.json"))
    assert names == sorted(p.name for p in b.iterdir() if not p.name.endswith(".stats.json"))
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    return names


def test_four_processes_give_the_single_process_bytes(table, tmp_path):
    single = build_shards(table, LEVELS, tmp_path / "single", ShardSettings(**SETTINGS))
    parts = tmp_path / "parts"
    assert min(run_parts(table, parts)) >= 1  # every part wrote shards
    parallel = assemble_shards(table, LEVELS, parts, ShardSettings(**SETTINGS))
    names = same_bytes(tmp_path / "single", parts)
    assert layout.SHARD_INDEX_FILE in names and layout.SHARD_CONTENTS_FILE in names
    assert sum(n.endswith(".tar") for n in names) == len(single.index["shards"]) >= 6
    assert parallel.index == single.index and parallel.index["total_count"] == table.height
    assert verify_shards(parts, parallel.index)["problems"] == []


@pytest.mark.slow
def test_incremental_parallel_build_matches_incremental_single(table, tmp_path):
    old, new = table.head(24), table
    settings = ShardSettings(**SETTINGS)
    build_shards(old, LEVELS, tmp_path / "single", settings)
    grown = build_shards(new, LEVELS, tmp_path / "single", settings)
    build_shards(old, LEVELS, tmp_path / "parts", settings)
    run_parts(new, tmp_path / "parts")
    again = assemble_shards(new, LEVELS, tmp_path / "parts", settings)
    same_bytes(tmp_path / "single", tmp_path / "parts")
    assert again.kept == grown.kept and again.kept  # old shards left untouched


def test_assembly_refuses_until_every_part_is_done(table, tmp_path):
    settings = ShardSettings(**SETTINGS)
    out = tmp_path / "out"
    build_shard_part(table, LEVELS, out, settings, part=0, n_parts=2)
    missing = part_plans(plan_build(table, LEVELS, out, settings).plans, 1, 2)[0].name
    with pytest.raises(InputError, match=f"shard {missing}: no .*has not finished"):
        assemble_shards(table, LEVELS, out, settings)
    assert not (out / layout.SHARD_INDEX_FILE).exists()
    build_shard_part(table, LEVELS, out, settings, part=1, n_parts=2)
    relabeled = table.with_columns(label_3=pl.col("label_3") + 1)  # other records: stale
    with pytest.raises(InputError, match="stale"):
        assemble_shards(relabeled, LEVELS, out, settings)
    with pytest.raises(InputError, match="part 2 of 2"):
        part_plans([], 2, 2)
    assert assemble_shards(table, LEVELS, out, settings).index["total_count"] == table.height


def test_part_number_from_an_indexed_job(table, tmp_path, monkeypatch, capsys):
    from geo_assets.shard_parts import cli

    path = tmp_path / "input.parquet"
    table.write_parquet(path)
    args = ["part", "--table", str(path), "--levels", "1,3", "--out", str(tmp_path / "out"),
            "--n-parts", "3", "--settings", json.dumps(SETTINGS)]
    monkeypatch.setenv("JOB_COMPLETION_INDEX", "2")  # set by Kubernetes in an Indexed Job
    assert cli(args) == 0
    printed = json.loads(capsys.readouterr().out.splitlines()[-1])
    plans = plan_build(table, LEVELS, tmp_path / "out", ShardSettings(**SETTINGS)).plans
    assert printed == {"part": 2, "shards": [p.name for p in part_plans(plans, 2, 3)]}
    with pytest.raises(InputError, match="unknown ShardSettings fields"):
        cli([*args[:-1], '{"shard_sise": 3}'])
