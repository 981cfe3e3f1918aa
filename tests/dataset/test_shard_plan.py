"""The shard bookkeeping at scale (compact table, lazy records) plans exactly what the earlier
all-in-memory algorithm planned: same shards, same samples in the same order, same records."""

from __future__ import annotations

import hashlib

import numpy as np
import polars as pl
import pytest

from geo_assets.settings import ShardSettings
from geo_assets.shard_plan import (
    CONTENT_COLUMNS,
    build_order,
    check_table,
    plan_shards,
    shard_table,
)

LEVELS = [1, 3, 5]


# --- the previous algorithm (geoscout before issue 12a), kept here as the reference ------------

def legacy_records(table: pl.DataFrame, levels, seed: int) -> pl.DataFrame:
    cells = pl.struct([pl.col(f"cell_{lv}").alias(str(lv)) for lv in levels])
    labels = pl.struct([pl.col(f"label_{lv}").cast(pl.Int64).alias(str(lv)) for lv in levels])
    record = pl.struct(
        pl.col("image_id"), pl.col("lat_deg"), pl.col("lon_deg"), pl.col("source"),
        pl.col("group_id"), pl.col("license"), pl.col("attribution"), pl.col("split"),
        pl.col("fold").cast(pl.Int64), cells.alias("cells"), labels.alias("labels"),
    ).struct.json_encode()
    records = table.with_columns(key=pl.col("sha256").str.slice(0, 20), record=record)
    records = records.with_columns(record_sha256=pl.Series(
        [hashlib.sha256(r.encode()).hexdigest() for r in records["record"]]))
    digest = records["image_id"].map_elements(
        lambda s: hashlib.blake2b(f"{seed}:{s}".encode(), digest_size=8).hexdigest(),
        return_dtype=pl.String)
    return records.with_columns(_order=digest).sort("_order").drop("_order")


def legacy_new(rows, next_number, size):
    plans = []
    for (split, fold), part in rows.group_by(["split", "fold"], maintain_order=True):
        start = next_number.get((split, fold), 0)
        for i, offset in enumerate(range(0, part.height, size)):
            name = f"{split}-{'t' if fold < 0 else fold}-{start + i:06d}"
            plans.append((name, False, part.slice(offset, size)))
    return sorted(plans, key=lambda p: p[0])


def legacy_plan(records, previous, size):
    if previous is None:
        return legacy_new(records, {}, size), [], []
    old = previous.select(CONTENT_COLUMNS)
    cur = old.join(records, on=["image_id", "split", "fold"], how="inner",
                   suffix="_new").filter(pl.col("key") == pl.col("key_new"))
    per_shard = old.group_by("shard").agg(n_old=pl.len()).join(
        cur.group_by("shard").agg(
            n_cur=pl.len(), same=(pl.col("record_sha256") == pl.col("record_sha256_new")).all()),
        on="shard", how="left").with_columns(pl.col("n_cur").fill_null(0))
    kept = sorted(per_shard.filter((pl.col("n_cur") == pl.col("n_old")) & pl.col("same"))
                  ["shard"].to_list())
    drop = per_shard.filter(pl.col("n_cur") == 0)["shard"].to_list()
    rewrite = set(per_shard["shard"]) - set(kept) - set(drop)
    plans = [(name, True, records.join(part.select("image_id"), on="image_id", how="semi"))
             for (name,), part in cur.filter(pl.col("shard").is_in(list(rewrite)))
             .group_by(["shard"], maintain_order=True)]
    placed = cur.filter(pl.col("shard").is_in(kept + sorted(rewrite)))
    new_rows = records.join(placed.select("image_id"), on="image_id", how="anti")
    numbers = old.select("split", "fold", n=pl.col("shard").str.slice(-6).cast(pl.Int64)) \
        .group_by("split", "fold").agg(pl.col("n").max() + 1)
    plans += legacy_new(new_rows, {(s, f): n for s, f, n in numbers.iter_rows()}, size)
    return sorted(plans, key=lambda p: p[0]), kept, sorted(drop)


# --- inputs ---------------------------------------------------------------------------------

def inputs(n: int, seed: int = 0, first: int = 0):
    """Manifest, splits and labels of ``n`` images: several sources, licences (some null
    attributions, non-ASCII text), groups, three splits with folds, levels 1/3/5."""
    rng = np.random.default_rng(seed)
    ids = [f"{'mapillary' if i % 3 else 'local'}:{i:07d}" for i in range(first, first + n)]
    manifest = pl.DataFrame({
        "image_id": ids,
        "sha256": [hashlib.sha256(f"{seed}/{i}".encode()).hexdigest() for i in ids],
        "lat_deg": rng.uniform(-60, 70, n), "lon_deg": rng.uniform(-180, 180, n),
        "source": [i.split(":")[0] for i in ids],
        "group_id": [f"seq-{k}" for k in rng.integers(0, n // 20 + 1, n)],
        "license": rng.choice(["CC BY-SA 4.0", "CC BY 2.0", "Zürich \"quoted\""], n),
        "attribution": pl.Series(rng.choice(["Mapillary contributors", "Ana Marić", ""], n))
        .replace("", None)})
    split = rng.choice(["train", "test", "val"], n, p=[0.7, 0.2, 0.1])
    fold = np.where(split == "test", -1, rng.integers(0, 3, n))
    splits = pl.DataFrame({"image_id": ids, "split": split, "fold": fold})
    labels = pl.DataFrame({"image_id": ids, **{
        f"cell_{lv}": [f"{c:0{lv}d}"[:lv] for c in rng.integers(0, 4 ** min(lv, 4), n)]
        for lv in LEVELS}, **{f"label_{lv}": rng.integers(0, 50, n) for lv in LEVELS}})
    return manifest, splits, labels


def legacy_table(manifest, splits, labels):
    return manifest.join(splits, on="image_id").join(labels, on="image_id", how="left") \
        .with_columns(source_path=pl.lit("/data/images/") + pl.col("sha256") + ".jpg")


def new_table(manifest, splits, labels, lazy=False):
    if lazy:
        manifest, splits, labels = manifest.lazy(), splits.lazy(), labels.lazy()
    return shard_table(manifest, splits, labels, lambda sha: f"/data/images/{sha}.jpg")


def compare(new, legacy):
    plans, kept, drop = new
    old_plans, old_kept, old_drop = legacy
    assert (kept, drop) == (old_kept, old_drop)
    assert [(p.name, p.rewrite) for p in plans] == [(n, r) for n, r, _ in old_plans]
    cols = ["image_id", "key", "record", "record_sha256", "source_path", "split", "fold"]
    for plan, (_, _, rows) in zip(plans, old_plans):
        assert plan.rows.select(cols).equals(rows.select(cols)), plan.name
        assert plan.source_paths == rows["source_path"].to_list()


def contents(plans) -> pl.DataFrame:
    return pl.concat([p.rows.with_columns(shard=pl.lit(p.name)).select(CONTENT_COLUMNS)
                      for p in plans])


# --- tests ----------------------------------------------------------------------------------

@pytest.mark.parametrize("lazy", [False, True])
def test_fresh_plan_equals_the_previous_algorithm(lazy):
    manifest, splits, labels = inputs(3000)
    table = new_table(manifest, splits, labels, lazy)
    assert table.schema["split"] == pl.Categorical and table.schema["label_3"] == pl.UInt32
    check_table(table, LEVELS)
    settings = ShardSettings(shard_size=37, seed=5)
    new = plan_shards(table, build_order(table, 5), None, settings, LEVELS)
    legacy = legacy_plan(legacy_records(legacy_table(manifest, splits, labels), LEVELS, 5),
                         None, 37)
    assert len(new[0]) > 50  # many shards over three splits and several folds
    compare(new, legacy)


@pytest.mark.parametrize("scanned", [False, True])
def test_incremental_plan_equals_the_previous_algorithm(scanned, tmp_path):
    """Images removed, relabelled and added after a first build: the same shards kept,
    rewritten, deleted and added as before (the previous contents read, or scanned from
    parquet as ``plan_build`` does)."""
    manifest, splits, labels = inputs(3000)
    settings = ShardSettings(shard_size=41)
    table = new_table(manifest, splits, labels)
    first = plan_shards(table, build_order(table, 0), None, settings, LEVELS)[0]
    previous = contents(first)
    more, more_splits, more_labels = inputs(400, seed=1, first=3000)
    gone = manifest["image_id"].gather(np.arange(0, 3000, 97))  # scattered removals
    manifest2 = pl.concat([manifest.filter(~pl.col("image_id").is_in(gone.implode())), more])
    relabelled = labels.with_columns(label_5=pl.when(pl.int_range(pl.len()) % 211 == 0)
                                     .then(pl.col("label_5") + 1).otherwise("label_5"))
    splits2, labels2 = pl.concat([splits, more_splits]), pl.concat([relabelled, more_labels])
    # whole shards gone: every image of two first-build shards removed
    dropped = pl.concat([first[3].rows["image_id"], first[10].rows["image_id"]])
    manifest2 = manifest2.filter(~pl.col("image_id").is_in(dropped.implode()))
    table2 = new_table(manifest2, splits2, labels2)
    if scanned:
        previous.write_parquet(tmp_path / "contents.parquet")
    given = pl.scan_parquet(tmp_path / "contents.parquet") if scanned else previous
    new = plan_shards(table2, build_order(table2, 0), given, settings, LEVELS)
    legacy = legacy_plan(legacy_records(legacy_table(manifest2, splits2, labels2), LEVELS, 0),
                         previous, 41)
    assert new[1] and new[2] and any(p.rewrite for p in new[0])  # kept, dropped, rewritten
    assert any(not p.rewrite for p in new[0])  # and new shards
    compare(new, legacy)
