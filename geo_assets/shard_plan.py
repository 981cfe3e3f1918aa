"""Shard bookkeeping: the sample table, the build order, and which shard holds which sample.

Sized for millions of samples (issue 12): the sample table keeps compact dtypes (categorical
strings for source, group, licence, attribution, split and cells; UInt32 labels), the build
order is one UInt64 sort key and a permutation of row positions, and a ``ShardPlan`` holds only
its rows' positions in the shared table. A shard's JSON records (``sample_records``) are made
when the writer asks for ``plan.rows``, one shard at a time, never for the whole table at once.
Records, keys and order are those of the earlier all-in-memory build, byte for byte.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import polars as pl

from geo_assets.errors import InputError
from geo_assets.settings import ShardSettings

KEY_HEX_DIGITS = 20
RECORD_COLUMNS = ("image_id", "sha256", "source_path", "lat_deg", "lon_deg", "source",
                  "group_id", "license", "attribution", "split", "fold")
CODED_COLUMNS = ("source", "group_id", "license", "attribution", "split")  # categorical
CONTENT_COLUMNS = ["image_id", "key", "shard", "record_sha256", "split", "fold"]
HASH_CHUNK = 1 << 16


def _slices(series: pl.Series, size: int = HASH_CHUNK):
    return (series.slice(offset, size) for offset in range(0, series.len(), size))


def shard_name(split: str, fold: int, number: int) -> str:
    return f"{split}-{'t' if fold < 0 else fold}-{number:06d}"


# --- the sample table ------------------------------------------------------------------------

def _compact(frame: pl.LazyFrame, cells_too: bool = True) -> pl.LazyFrame:
    """Categorical strings and UInt32 labels for the columns of ``frame`` that have them."""
    names = frame.collect_schema().names()
    coded = [c for c in names if c in CODED_COLUMNS or (cells_too and c.startswith("cell_"))]
    labels = [c for c in names if c.startswith("label_")]
    return frame.with_columns(pl.col(coded).cast(pl.Categorical),
                              pl.col(labels).cast(pl.UInt32))


def shard_table(manifest, splits, labels, image_path: Callable[[str], str]) -> pl.DataFrame:
    """Join kept manifest rows, their split and their labels into the shard input table.

    ``manifest``, ``splits``, ``labels``: DataFrames or LazyFrames (a scan reads only the
    columns needed). ``image_path(sha256) -> str``: where the stored image is (a local path or
    fsspec URL). Images with no split (excluded as bridges between splits) are left out.
    Strings that repeat are categorical and labels UInt32 (``sample_records`` writes them
    back as the same JSON).
    """
    base = _compact(manifest.lazy().select(
        "image_id", "sha256", "lat_deg", "lon_deg", "source", "group_id", "license",
        "attribution"))
    table = base.join(_compact(splits.lazy().select("image_id", "split", "fold")),
                      on="image_id", how="inner") \
        .join(_compact(labels.lazy()), on="image_id", how="left").collect()
    label_cols = [c for c in table.columns if c.startswith("label_")]
    if table.select(pl.any_horizontal(pl.col(label_cols).is_null())).to_series().any():
        raise InputError("some split images have no hierarchy labels: rematerialize the "
                         "'hierarchy' asset after 'splits'")
    paths = [pl.Series([image_path(s) for s in part.to_list()], dtype=pl.String)
             for part in _slices(table["sha256"])]
    return table.with_columns(source_path=pl.concat(paths) if paths
                              else pl.Series([], dtype=pl.String))


def check_table(table: pl.DataFrame, levels: list[int]) -> None:
    """The input errors a build refuses: missing columns, no rows, unstored or repeated
    images (two images whose keys, the first SHA-256 digits, are equal)."""
    needed = [*RECORD_COLUMNS, *(f"cell_{lv}" for lv in levels), *(f"label_{lv}" for lv in levels)]
    missing = [c for c in needed if c not in table.columns]
    if missing:
        raise InputError(f"shard input table lacks columns {missing}")
    if table.height == 0:
        raise InputError("shard input table is empty: no kept images to write")
    if table["sha256"].null_count():
        raise InputError("shard input: some images have no sha256; store them first")
    if table.select(pl.col("sha256").str.slice(0, KEY_HEX_DIGITS).n_unique()).item() \
            != table.height:
        raise InputError("shard input: two images share a SHA-256 prefix (duplicate content)")


def sample_records(table: pl.DataFrame, levels: list[int]) -> pl.DataFrame:
    """``table`` with ``key``, ``record`` (the sample's JSON text) and ``record_sha256`` added,
    its coded columns as plain strings again. Called per shard (see ``ShardPlan.rows``).

    ``table`` needs RECORD_COLUMNS plus ``cell_<L>`` and ``label_<L>`` for every level.
    """
    coded = [c for c, t in table.schema.items() if t == pl.Categorical]
    table = table.with_columns(pl.col(coded).cast(pl.String))
    cells = pl.struct([pl.col(f"cell_{lv}").alias(str(lv)) for lv in levels])
    labels = pl.struct([pl.col(f"label_{lv}").cast(pl.Int64).alias(str(lv)) for lv in levels])
    record = pl.struct(
        pl.col("image_id"), pl.col("lat_deg"), pl.col("lon_deg"), pl.col("source"),
        pl.col("group_id"), pl.col("license"), pl.col("attribution"), pl.col("split"),
        pl.col("fold").cast(pl.Int64), cells.alias("cells"), labels.alias("labels"),
    ).struct.json_encode()
    return table.with_columns(key=pl.col("sha256").str.slice(0, KEY_HEX_DIGITS),
                              record=record).with_columns(
        record_sha256=pl.col("record").map_batches(
            lambda s: pl.Series([hashlib.sha256(r.encode()).hexdigest() for r in s]),
            return_dtype=pl.String))


# --- the build order -------------------------------------------------------------------------

def order_keys(image_ids: pl.Series, seed: int) -> pl.Series:
    """UInt64 sort key of each image: the first 8 bytes of a seeded BLAKE2b of its id (read
    big-endian, so it sorts as the hex digest did)."""
    parts = []
    for chunk in _slices(image_ids):
        raw = b"".join(hashlib.blake2b(f"{seed}:{s}".encode(), digest_size=8).digest()
                       for s in chunk.to_list())
        parts.append(np.frombuffer(raw, dtype=">u8").astype(np.uint64))
    return pl.Series("_order", np.concatenate(parts) if parts else [], dtype=pl.UInt64)


def build_order(table: pl.DataFrame, seed: int) -> pl.Series:
    """Deterministic shuffle: row positions of ``table`` ordered by ``order_keys`` (input
    order is moot). Returns the UInt32 permutation, not a sorted copy of the table."""
    keys = order_keys(table["image_id"], seed)
    return pl.Series("_i", np.argsort(keys.to_numpy(), kind="stable").astype(np.uint32))


# --- the plan --------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class ShardPlan:
    """One shard to write: its rows are positions in the shared sample table."""

    name: str
    split: str
    fold: int
    table: pl.DataFrame     # the whole sample table (shared by every plan, not copied)
    index: pl.Series        # positions in ``table`` of this shard's samples, in build order
    levels: tuple[int, ...]
    rewrite: bool = False   # True: rebuild from the old tar's JPEG bytes (no resizing)

    @property
    def rows(self) -> pl.DataFrame:
        """The shard's samples with key, record and record_sha256 (made on each call)."""
        return sample_records(self.table.select(pl.all().gather(self.index)), list(self.levels))

    @property
    def source_paths(self) -> list[str]:
        return self.table["source_path"].gather(self.index).to_list()


def _new_plans(table: pl.DataFrame, rows: pl.DataFrame, next_number: dict[tuple[str, int], int],
               settings: ShardSettings, levels: tuple[int, ...]) -> list[ShardPlan]:
    """Plans for ``rows`` (``_i``, split, fold in build order): per split and fold, runs of
    ``shard_size`` in build order, numbered from ``next_number``."""
    plans = []
    size = settings.shard_size
    for (split, fold), part in rows.group_by(["split", "fold"], maintain_order=True):
        start = next_number.get((split, fold), 0)
        index = part["_i"]
        for i, offset in enumerate(range(0, part.height, size)):
            plans.append(ShardPlan(shard_name(split, fold, start + i), split, int(fold), table,
                                   index.slice(offset, size), levels))
    return sorted(plans, key=lambda p: p.name)


def _slim(table: pl.DataFrame, order: pl.Series) -> pl.DataFrame:
    """``_i``, split and fold of every sample, in build order."""
    return table.select(pl.col("split").cast(pl.String), "fold").with_columns(
        _i=pl.int_range(pl.len(), dtype=pl.UInt32)).select(pl.all().gather(order))


def _with_hashes(table: pl.DataFrame, order: pl.Series, levels: list[int]) -> pl.DataFrame:
    """image_id, split, fold, the key (``_k0``, ``_k1``), the record's SHA-256 as two UInt64
    (``_h0``, ``_h1``: ``_hash_halves``), ``_i`` (row in ``table``) and ``_rank`` (place in the build order) of
    every sample, in table order (no reordered copy), the records made a chunk at a time
    (5M hex digests would take 0.3 GiB, their halves 0.08)."""
    halves = pl.concat([  # keys too a chunk at a time: whole, the slices take 0.7 GiB at 5M
        pl.concat([sample_records(part, levels).select(_hash_halves()),
                   part.select(_key_ints("sha256"))], how="horizontal")
        for part in table.iter_slices(HASH_CHUNK)])
    rank = np.empty(table.height, dtype=np.uint32)
    rank[order.to_numpy()] = np.arange(table.height, dtype=np.uint32)
    return table.select("image_id", pl.col("split").cast(pl.String), "fold").with_columns(
        halves, _i=pl.int_range(pl.len(), dtype=pl.UInt32), _rank=pl.Series(rank))


def _matched(old: pl.DataFrame, records: pl.DataFrame) -> pl.DataFrame:
    """The samples of ``old`` (``previous_keys``) that are in ``records`` (``_with_hashes``):
    the same image (same key: same bytes) in the same split and fold. Their shard, split,
    fold, ``_i``, ``_rank`` and ``_same`` (the record is unchanged). Joined on integers
    (64-bit hash of the image id; the key's 80 bits as two integers), no string hash table:
    a false match needs a 64-bit collision between two ids of the same content, and would
    only move that image to a rewritten shard (its record is made from ``records``)."""
    def ints(frame: pl.DataFrame) -> pl.LazyFrame:
        return frame.lazy().with_columns(
            _id=pl.col("image_id").hash(seed=0)).drop("image_id")

    same = [pl.col(c) == pl.col(f"{c}_new") for c in ("split", "fold", "_k0", "_k1")]
    return ints(old).join(ints(records), on="_id", how="inner", suffix="_new") \
        .filter(*same).select(
            "shard", "split", "fold", "_i", "_rank",
            _same=(pl.col("_h0") == pl.col("_h0_new")) & (pl.col("_h1") == pl.col("_h1_new"))
        ).collect()


def _key_ints(column: str) -> list[pl.Expr]:
    """A sample's key (the first KEY_HEX_DIGITS hex digits of ``column``) as two integers,
    ``_k0`` (16 digits) and ``_k1`` (the other 4): equal when the keys are."""
    hexa = pl.col(column)
    return [hexa.str.slice(0, 16).str.to_integer(base=16, dtype=pl.UInt64).alias("_k0"),
            hexa.str.slice(16, KEY_HEX_DIGITS - 16).str.to_integer(base=16, dtype=pl.UInt32)
            .alias("_k1")]


def _hash_halves() -> list[pl.Expr]:
    """The first 128 bits of ``record_sha256`` (hex) as two UInt64 columns: records compare
    equal when these do (a SHA-256 collision in 128 bits is not a practical concern)."""
    hexa = pl.col("record_sha256")
    return [hexa.str.slice(0, 16).str.to_integer(base=16, dtype=pl.UInt64).alias("_h0"),
            hexa.str.slice(16, 16).str.to_integer(base=16, dtype=pl.UInt64).alias("_h1")]


def previous_keys(previous: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame:
    """What planning needs of the last build's contents (a scan reads only these columns):
    image_id, split, fold, the key as ``_k0``, ``_k1`` (``_key_ints``), shard (categorical)
    and the record hash as ``_h0``, ``_h1``
    (5M samples: no 0.4 GiB of hex digests)."""
    return previous.lazy().select("image_id", "split", "fold", *_key_ints("key"),
                                  pl.col("shard").cast(pl.Categorical), *_hash_halves()
                                  ).collect(engine="streaming")  # in morsels: no whole slices


def plan_shards(table: pl.DataFrame, order: pl.Series,
                previous: pl.DataFrame | pl.LazyFrame | None, settings: ShardSettings,
                levels: list[int]) -> tuple[list[ShardPlan], list[str], list[str]]:
    """Decide which shards to write, keep and delete.

    ``table``: the sample table (``check_table``); ``order``: its build order
    (``build_order``). ``previous``: the last build's ``contents.parquet``, read or scanned
    (or None). Returns (plans to write, names kept as they are, names to delete).
    """
    lv = tuple(levels)
    old = None if previous is None else previous_keys(previous)
    if old is None or old.height == 0:
        return _new_plans(table, _slim(table, order), {}, settings, lv), [], []
    records = _with_hashes(table, order, levels)
    cur = _matched(old, records)
    per_shard = old.group_by("shard").agg(n_old=pl.len()).join(
        cur.group_by("shard").agg(n_cur=pl.len(), same=pl.col("_same").all()),
        on="shard", how="left").with_columns(pl.col("n_cur").fill_null(0))
    keep = per_shard.filter((pl.col("n_cur") == pl.col("n_old")) & pl.col("same"))
    drop = per_shard.filter(pl.col("n_cur") == 0)
    kept = sorted(keep["shard"].to_list())
    rewrite_names = set(per_shard["shard"]) - set(kept) - set(drop["shard"])
    rewrite_rows = cur.filter(pl.col("shard").is_in(list(rewrite_names))).sort("_rank")
    plans = [ShardPlan(name, part["split"][0], int(part["fold"][0]), table, part["_i"], lv,
                       rewrite=True)  # in build order (_rank), as in ``records``
             for (name,), part in rewrite_rows.group_by(["shard"], maintain_order=True)]
    del rewrite_rows
    new = np.ones(records.height, dtype=bool)  # every sample in ``cur`` is placed (a shard
    new[cur["_i"].to_numpy()] = False         # with a sample in ``cur`` is kept or rewritten)
    del cur
    new_rows = records.select("_i", "split", "fold", "_rank").filter(pl.Series(new)) \
        .sort("_rank")  # build order
    numbers = old.select(
        "split", "fold", n=pl.col("shard").cast(pl.String).str.slice(-6).cast(pl.Int64)
    ).group_by("split", "fold").agg(pl.col("n").max() + 1)
    next_number = {(s, f): n for s, f, n in numbers.iter_rows()}
    plans += _new_plans(table, new_rows, next_number, settings, lv)
    return sorted(plans, key=lambda p: p.name), kept, sorted(drop["shard"].to_list())
