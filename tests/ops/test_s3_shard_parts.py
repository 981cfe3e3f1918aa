"""Shards written by 4 separate processes (as 4 pods of an Indexed Job would) straight into an
``s3://`` data root on moto's server: images read from the bucket, no shared folder, and the
shards, contents and index byte-identical to the single-process build of the same table. A part
cut off before its stats is reported by the assembly; re-run, it gives the same objects."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import polars as pl
import pytest

from geo_assets import layout
from geo_assets.errors import InputError
from geo_assets.settings import ShardSettings
from geo_assets.shard_parts import assemble_shards, build_shard_part
from geo_assets.shards import build_shards, verify_shards
from geo_assets.storage import DataRoot
from tests.conftest import shared_data_path
from tests.dataset.helpers import croatia_table, with_fake_labels

pytestmark = pytest.mark.slow

LEVELS = [1, 3]
SETTINGS = ShardSettings(shard_size=5, workers=1)
FORKED = ShardSettings(shard_size=5, workers=2, chunk_size=2)  # the same bytes, in 2 processes
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def bucket_table(s3_env):
    """The Croatia photos stored in the bucket's image store; the table names them by URL."""
    root = DataRoot(f"s3://{s3_env.bucket}/{uuid.uuid4().hex[:8]}/data")
    table = with_fake_labels(croatia_table(shared_data_path("real", "croatia_streetview"),
                                           limit=40), LEVELS)
    for path in table["source_path"]:
        root.put_image(Path(path).read_bytes())
    place = table["group_id"].rank("dense").to_numpy()
    table = table.with_columns(
        source_path=pl.Series([root.uri(layout.image(s)) for s in table["sha256"]]),
        split=pl.Series(["test" if p % 4 == 0 else "train" for p in place]),
        fold=pl.Series([-1 if p % 4 == 0 else int(p % 2) for p in place]))
    return root, table


def start_part(table_url: str, shards_url: str, part: int) -> subprocess.Popen:
    """A part in its own Python process: only the environment (credentials, endpoint) and the
    bucket are shared with the others, as with pods."""
    cmd = [sys.executable, "-m", "geo_assets.shard_parts", "part", "--table", table_url,
           "--levels", ",".join(map(str, LEVELS)), "--out", shards_url, "--n-parts", "4",
           "--settings", json.dumps({"shard_size": SETTINGS.shard_size, "workers": 1})]
    return subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "JOB_COMPLETION_INDEX": str(part)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen) -> list[str]:
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-2000:]
    return json.loads(out.splitlines()[-1])["shards"]


def objects(root: DataRoot, folder: str) -> dict[str, bytes]:
    """Every object under ``folder`` in the bucket, by name."""
    return {rel.rsplit("/", 1)[1]: root.read_bytes(rel) for rel in root.glob(f"{folder}/*")}


def test_four_processes_on_a_bucket_give_the_single_process_bytes(bucket_table, tmp_path):
    root, table = bucket_table
    single = build_shards(table, LEVELS, tmp_path / "single", SETTINGS)  # reads the bucket too
    shards_rel = layout.in_datasets(layout.SHARDS_DIR)
    shards_url, table_url = root.uri(shards_rel), root.uri("shard-input.parquet")
    with root.open_atomic("shard-input.parquet") as f:  # no shared volume: the table too
        table.write_parquet(f)

    written = [finish(p) for p in [start_part(table_url, shards_url, i) for i in range(4)]]
    names = sorted(name for part in written for name in part)
    assert all(written) and names == [e["name"] for e in single.index["shards"]]

    # Part 1 cut off after its tars, before a stats object: the assembly names the shard.
    first_run = objects(root, shards_rel)
    cut = written[1][0]
    root.remove([f"{shards_rel}/{layout.shard_stats_file(cut)}"])
    with pytest.raises(InputError, match=f"shard {cut}: no .*has not finished"):
        assemble_shards(table, LEVELS, shards_url, SETTINGS)
    assert not root.exists(f"{shards_rel}/{layout.SHARD_INDEX_FILE}")

    # The pod retried: the same objects (stats differ only in the time they took).
    assert finish(start_part(table_url, shards_url, 1)) == written[1]
    rerun = objects(root, shards_rel)
    assert rerun.keys() == first_run.keys() | {layout.shard_stats_file(cut)}
    for name, data in rerun.items():
        if name.endswith(".tar"):
            assert data == first_run[name], name
        elif name in first_run:
            assert ({**json.loads(data), "seconds": 0}
                    == {**json.loads(first_run[name]), "seconds": 0}), name

    parallel = assemble_shards(table, LEVELS, shards_url, SETTINGS)
    in_bucket = {n: d for n, d in objects(root, shards_rel).items()
                 if not n.endswith(".stats.json")}
    local = {p.name: p.read_bytes() for p in (tmp_path / "single").iterdir()
             if not p.name.endswith(".stats.json")}
    assert {layout.SHARD_INDEX_FILE, layout.SHARD_CONTENTS_FILE} <= local.keys()
    assert in_bucket.keys() == local.keys() and sum(n.endswith(".tar") for n in local) >= 6
    for name, data in local.items():
        assert in_bucket[name] == data, name
    assert parallel.index == single.index and parallel.index["total_count"] == table.height
    assert verify_shards(tmp_path / "single", parallel.index)["problems"] == []


def changed(table: pl.DataFrame) -> pl.DataFrame:
    """Most test images gone (a shard dropped) and fold 1 relabelled (its shards rewritten
    from their old tars)."""
    gone = pl.col("split").eq("test") & (pl.int_range(pl.len()) <= 30)
    return table.filter(~gone).with_columns(
        label_3=pl.when(pl.col("fold") == 1).then(pl.col("label_3") + 1)
        .otherwise(pl.col("label_3")))


def test_incremental_builds_on_a_bucket_keep_rewrite_and_drop_as_the_single_build(
        bucket_table, tmp_path):
    root, table = bucket_table
    shards_rel = layout.in_datasets(layout.SHARDS_DIR)
    steps = [table.head(24), table, changed(table)]
    for step in steps:
        single = build_shards(step, LEVELS, tmp_path / "single", SETTINGS)
        for part in range(4):  # in-process parts, resizing in 2 forked workers after s3fs use
            build_shard_part(step, LEVELS, root.uri(shards_rel), FORKED, part, 4)
        again = assemble_shards(step, LEVELS, root.uri(shards_rel), SETTINGS)
        assert (again.kept, again.deleted) == (single.kept, single.deleted)
        assert again.index == single.index
    assert again.kept and again.deleted and any(s["rewritten"] for s in again.written)
    local = {p.name: p.read_bytes() for p in (tmp_path / "single").iterdir()
             if not p.name.endswith(".stats.json")}
    in_bucket = {n: d for n, d in objects(root, shards_rel).items()
                 if not n.endswith(".stats.json")}
    assert in_bucket.keys() == local.keys()  # the dropped shards are gone from the bucket too
    for name, data in local.items():
        assert in_bucket[name] == data, name
