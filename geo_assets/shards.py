"""WebDataset shards: resized JPEGs with one JSON record each, written atomically.

Over the ~450-line guide: planning, writing and assembling share the record and index
formats defined here (the parallel parts in ``geo_assets.shard_parts`` reuse them); the
planning half is the candidate to move out.

Layout under a shard folder (names in ``geo_assets.layout``)::

    <split>-<fold>-<NNNNNN>.tar        fold "t" for test: train-0-000000.tar, test-t-000000.tar
    <split>-<fold>-<NNNNNN>.stats.json written after its tar: count, failures, timings
    contents.parquet                   image_id, key, shard, record_sha256 (one row per sample)
    index.json                         every shard with split, fold, count, sha256; written last

A sample is ``__key__`` (first 20 hex digits of the image's SHA-256, no dots), ``jpg`` (the
image resized so that its shorter side is ``image_size``) and ``json`` (the record built by
``sample_record``). Tars use a fixed mtime, so the same input gives byte-identical shards.

Resizing runs in a process pool, in chunks, using PIL's draft mode (libjpeg DCT scaling: a
640 px JPEG is decoded straight at 320 px) before a box (area) resize; the main process writes the
tars in order, so a shard's bytes do not depend on the pool's timing.

Parallel builds (``geo_assets.shard_parts``): every part plans the same build, writes every
n-th shard, and one last step assembles ``contents.parquet`` and ``index.json`` from the parts'
stats, byte for byte what the single-process build writes.

Incremental builds: a shard whose samples and records are unchanged is kept as is; a shard
whose records changed (labels, removed images) is rewritten from its own JPEG bytes without
resizing again; images that are in no kept shard go into new shards, numbered after the last
shard of their split and fold ("new cells' images go into new shards").
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import polars as pl
from PIL import Image, ImageOps

from geo_assets import layout
from geo_assets.errors import InputError
from geo_assets.images import check_header, to_8bit
from geo_assets.progress import track
from geo_assets.settings import ImageSettings, ShardSettings
from geo_assets.storage import atomic_path, sha256_file, write_json_atomic

KEY_HEX_DIGITS = 20
FIXED_MTIME = 1_600_000_000  # any integer constant: byte-reproducible tars; an integer
# also keeps tarfile from adding a pax header (a float mtime) before every member
RECORD_COLUMNS = ("image_id", "sha256", "source_path", "lat_deg", "lon_deg", "source",
                  "group_id", "license", "attribution", "split", "fold")


def shard_name(split: str, fold: int, number: int) -> str:
    return f"{split}-{'t' if fold < 0 else fold}-{number:06d}"


# --- resizing (runs in worker processes) ---------------------------------------------------

# stored images passed ingest's checks; these are the safety limits again (formats, pixels)
SHARD_IMAGE_SETTINGS = ImageSettings(min_width=1, min_height=1)


def resize_image(data: bytes, size: int, quality: int) -> bytes:
    """Image bytes -> JPEG bytes whose shorter side is ``size`` (EXIF orientation applied).

    PIL's draft mode lets libjpeg decode at 1/2, 1/4 or 1/8 scale (never below the target),
    so a 1024 px image decodes straight at 256 px and needs no resize; what is left is an
    area-averaging (box) reduction by less than 2x.
    """
    im = check_header(data, SHARD_IMAGE_SETTINGS, what="stored image")  # pixel/frame limits
    w, h = im.size
    scale = size / min(w, h)
    target = (max(1, round(w * scale)), max(1, round(h * scale)))
    if im.format == "JPEG":
        im.draft("RGB", target)  # DCT scaling: decode at the smallest scale >= target
    orientation = im.getexif().get(0x0112, 1)
    if im.mode != "RGB":
        im = to_8bit(im).convert("RGB")  # 16-bit data scaled, not clipped
    if im.size != target:  # area averaging down (as cv2.INTER_AREA), bicubic up
        shrink = im.size[0] > target[0]
        im = im.resize(target, Image.Resampling.BOX if shrink else Image.Resampling.BICUBIC)
    if orientation != 1:
        im = ImageOps.exif_transpose(im)
    out = io.BytesIO()
    im.save(out, "JPEG", quality=quality)
    return out.getvalue()


def _read_source(path: str) -> bytes:
    if "://" in path and not path.startswith("file://"):
        import fsspec

        with fsspec.open(path, "rb") as f:
            return f.read()
    with open(path.removeprefix("file://"), "rb") as f:
        return f.read()


def _resize_one(path: str, size: int, quality: int) -> tuple[bytes | None, str | None]:
    try:
        return resize_image(_read_source(path), size, quality), None
    except Exception as exc:  # noqa: BLE001 - reported per image in the shard stats
        return None, f"{type(exc).__name__}: {exc}"[:300]


_THREADS: dict[int, ThreadPoolExecutor] = {}  # per worker process (by pid): its thread pool


def _resize_chunk(args: tuple[list[str], int, int, int]) -> list[tuple[bytes | None,
                                                                        str | None]]:
    """Worker task: resize a chunk; failures come back as messages, never raise. With
    ``threads`` > 1 the images of the chunk overlap (PIL releases the GIL while it decodes,
    resizes and encodes; file reads overlap too)."""
    paths, size, quality, threads = args
    if threads <= 1:
        return [_resize_one(p, size, quality) for p in paths]
    pool = _THREADS.get(os.getpid())
    if pool is None:  # one thread pool per worker process, made after the fork
        pool = _THREADS[os.getpid()] = ThreadPoolExecutor(threads)
    return list(pool.map(_resize_one, paths, [size] * len(paths), [quality] * len(paths)))


def resize_many(paths: list[str], settings: ShardSettings) -> Iterator[tuple[bytes | None,
                                                                           str | None]]:
    """Resized bytes (or an error) for each path, in input order, from a process pool.

    At most ``4 * workers`` chunks are in flight, so memory stays bounded however many images
    there are.
    """
    chunks = [(paths[i:i + settings.chunk_size], settings.image_size, settings.jpeg_quality,
               settings.threads) for i in range(0, len(paths), settings.chunk_size)]
    if settings.workers == 1 or len(chunks) <= 1:  # in this process: no thread pool left over
        for paths_, size, quality, _ in chunks:
            yield from _resize_chunk((paths_, size, quality, 1))
        return
    window = 4 * settings.workers
    with ProcessPoolExecutor(settings.workers, mp_context=get_context("fork")) as pool:
        pending = deque(pool.submit(_resize_chunk, c) for c in chunks[:window])
        for chunk in chunks[window:]:
            yield from pending.popleft().result()
            pending.append(pool.submit(_resize_chunk, chunk))
        while pending:
            yield from pending.popleft().result()


# --- records --------------------------------------------------------------------------------

def sample_records(table: pl.DataFrame, levels: list[int]) -> pl.DataFrame:
    """Add ``key`` and ``record`` (the sample's JSON text) to a table of images.

    ``table`` needs RECORD_COLUMNS plus ``cell_<L>`` and ``label_<L>`` for every level.
    """
    needed = [*RECORD_COLUMNS, *(f"cell_{lv}" for lv in levels), *(f"label_{lv}" for lv in levels)]
    missing = [c for c in needed if c not in table.columns]
    if missing:
        raise InputError(f"shard input table lacks columns {missing}")
    if table.height == 0:
        raise InputError("shard input table is empty: no kept images to write")
    if table["sha256"].null_count():
        raise InputError("shard input: some images have no sha256; store them first")
    keys = table["sha256"].str.slice(0, KEY_HEX_DIGITS)
    if keys.n_unique() != table.height:
        raise InputError("shard input: two images share a SHA-256 prefix (duplicate content)")
    cells = pl.struct([pl.col(f"cell_{lv}").alias(str(lv)) for lv in levels])
    labels = pl.struct([pl.col(f"label_{lv}").cast(pl.Int64).alias(str(lv)) for lv in levels])
    record = pl.struct(
        pl.col("image_id"), pl.col("lat_deg"), pl.col("lon_deg"), pl.col("source"),
        pl.col("group_id"), pl.col("license"), pl.col("attribution"), pl.col("split"),
        pl.col("fold").cast(pl.Int64), cells.alias("cells"), labels.alias("labels"),
    ).struct.json_encode()
    return table.with_columns(key=keys, record=record).with_columns(
        record_sha256=pl.col("record").map_batches(
            lambda s: pl.Series([hashlib.sha256(r.encode()).hexdigest() for r in s]),
            return_dtype=pl.String))


def build_order(table: pl.DataFrame, seed: int) -> pl.DataFrame:
    """Deterministic shuffle: order by a seeded hash of the image id (input order is moot)."""
    digest = table["image_id"].map_elements(
        lambda s: hashlib.blake2b(f"{seed}:{s}".encode(), digest_size=8).hexdigest(),
        return_dtype=pl.String)
    return table.with_columns(_order=digest).sort("_order").drop("_order")


# --- planning --------------------------------------------------------------------------------

@dataclass(frozen=True)
class ShardPlan:
    name: str
    split: str
    fold: int
    rows: pl.DataFrame      # key, image_id, record, record_sha256, source_path, split, fold
    rewrite: bool = False   # True: rebuild from the old tar's JPEG bytes (no resizing)


CONTENT_COLUMNS = ["image_id", "key", "shard", "record_sha256", "split", "fold"]


def _new_plans(rows: pl.DataFrame, next_number: dict[tuple[str, int], int],
               shard_size: int) -> list[ShardPlan]:
    plans = []
    for (split, fold), part in rows.group_by(["split", "fold"], maintain_order=True):
        start = next_number.get((split, fold), 0)
        for i, offset in enumerate(range(0, part.height, shard_size)):
            plans.append(ShardPlan(shard_name(split, fold, start + i), split, int(fold),
                                   part.slice(offset, shard_size)))
    return sorted(plans, key=lambda p: p.name)


def plan_shards(records: pl.DataFrame, previous: pl.DataFrame | None,
                settings: ShardSettings) -> tuple[list[ShardPlan], list[str], list[str]]:
    """Decide which shards to write, keep and delete.

    ``records``: output of ``sample_records`` in build order. ``previous``: the last build's
    ``contents.parquet`` (or None). Returns (plans to write, names kept as they are, names to
    delete).
    """
    if previous is None or previous.height == 0:
        return _new_plans(records, {}, settings.shard_size), [], []
    old = previous.select(CONTENT_COLUMNS)
    cur = old.join(records, on=["image_id", "split", "fold"], how="inner",
                   suffix="_new").filter(pl.col("key") == pl.col("key_new"))  # same bytes
    per_shard = old.group_by("shard").agg(n_old=pl.len()).join(
        cur.group_by("shard").agg(
            n_cur=pl.len(), same=(pl.col("record_sha256") == pl.col("record_sha256_new")).all()),
        on="shard", how="left").with_columns(pl.col("n_cur").fill_null(0))
    keep = per_shard.filter((pl.col("n_cur") == pl.col("n_old")) & pl.col("same"))
    drop = per_shard.filter(pl.col("n_cur") == 0)
    kept = sorted(keep["shard"].to_list())
    rewrite_names = set(per_shard["shard"]) - set(kept) - set(drop["shard"])
    rewrite_rows = cur.filter(pl.col("shard").is_in(list(rewrite_names)))
    plans = [ShardPlan(name, part["split"][0], int(part["fold"][0]),
                       records.join(part.select("image_id"), on="image_id", how="semi"),
                       rewrite=True)
             for (name,), part in rewrite_rows.group_by(["shard"], maintain_order=True)]
    placed = cur.filter(pl.col("shard").is_in(kept + sorted(rewrite_names)))
    new_rows = records.join(placed.select("image_id"), on="image_id", how="anti")
    numbers = old.select(
        "split", "fold", n=pl.col("shard").str.slice(-6).cast(pl.Int64)
    ).group_by("split", "fold").agg(pl.col("n").max() + 1)
    next_number = {(s, f): n for s, f, n in numbers.iter_rows()}
    plans += _new_plans(new_rows, next_number, settings.shard_size)
    return sorted(plans, key=lambda p: p.name), kept, sorted(drop["shard"].to_list())


# --- writing ---------------------------------------------------------------------------------

def write_tar(path: Path, samples: Iterator[tuple[str, bytes, str]]) -> int:
    """Write (key, jpg, json text) samples to ``path`` atomically; return the count."""
    import webdataset as wds  # imports torch: keep it out of module import

    count = 0
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        with wds.TarWriter(f, mtime=FIXED_MTIME, encoder=False) as writer:
            for key, jpg, record in samples:
                writer.write({"__key__": key, "jpg": jpg, "json": record.encode()})
                count += 1
        f.flush()
        os.fsync(f.fileno())
    return count


def read_tar_images(path: Path) -> dict[str, bytes]:
    """key -> jpg bytes of an existing shard (used to rewrite it without resizing)."""
    import webdataset as wds

    out: dict[str, bytes] = {}
    for sample in wds.DataPipeline(wds.SimpleShardList([str(path)]), wds.tarfile_to_samples()):
        out[sample["__key__"]] = sample["jpg"]
    return out


def plan_fingerprint(plan: ShardPlan, settings: ShardSettings) -> str:
    """What a shard's bytes depend on: its samples' keys and records, image size and quality.
    Stored in the shard's stats, so the index assembly knows the tar is this build's."""
    h = hashlib.sha256(f"{settings.image_size}:{settings.jpeg_quality}\n".encode())
    for key, record_sha in plan.rows.select("key", "record_sha256").iter_rows():
        h.update(f"{key}:{record_sha}\n".encode())
    return h.hexdigest()


def _write_plan(out_dir: Path, plan: ShardPlan, images: Iterator[tuple[bytes | None, str | None]],
                settings: ShardSettings) -> tuple[dict, list[str]]:
    start = time.perf_counter()
    errors: dict[str, int] = {}
    failed: list[str] = []

    def samples():
        for (key, image_id, record), (jpg, err) in zip(
                plan.rows.select("key", "image_id", "record").iter_rows(), images):
            if jpg is None:
                failed.append(image_id)
                errors[err] = errors.get(err, 0) + 1
                continue
            yield key, jpg, record

    tar = out_dir / layout.shard_file(plan.name)
    count = write_tar(tar, samples())
    stats = {"name": plan.name, "split": plan.split, "fold": plan.fold, "count": count,
             "failed": len(failed), "failed_image_ids": failed, "errors": errors,
             "rewritten": plan.rewrite, "seconds": round(time.perf_counter() - start, 3),
             "bytes": tar.stat().st_size, "sha256": sha256_file(tar),
             "plan_sha256": plan_fingerprint(plan, settings)}
    # written last: the shard is done
    write_json_atomic(out_dir / layout.shard_stats_file(plan.name), stats)
    return stats, failed


# --- the build -------------------------------------------------------------------------------

@dataclass(frozen=True)
class ShardBuild:
    index: dict                 # what index.json holds
    contents: pl.DataFrame      # CONTENT_COLUMNS, one row per sample in a shard
    written: list[dict]         # stats of the shards written by this build
    kept: list[str]             # shards left as they were
    deleted: list[str]          # shards no longer needed, removed
    failed_image_ids: list[str]
    seconds: float


def read_index(out_dir: Path) -> dict | None:
    path = out_dir / layout.SHARD_INDEX_FILE
    return json.loads(path.read_text()) if path.exists() else None


def _previous_contents(out_dir: Path, settings: ShardSettings,
                       incremental: bool) -> tuple[pl.DataFrame | None, dict | None]:
    """The last build's contents, when it can be reused, and its index (None if none)."""
    index = read_index(out_dir)
    contents = out_dir / layout.SHARD_CONTENTS_FILE
    if index is None or not contents.exists():
        return None, index
    same = (index.get("image_size") == settings.image_size
            and index.get("jpeg_quality") == settings.jpeg_quality)
    return (pl.read_parquet(contents) if same and incremental else None), index


def _plan_images(out_dir: Path, plan: ShardPlan,
                 fresh: Iterator[tuple[bytes | None, str | None]]):
    if not plan.rewrite:
        return fresh
    old = read_tar_images(out_dir / layout.shard_file(plan.name))
    return ((old.get(k), None if k in old else "missing from the old shard")
            for k in plan.rows["key"])


@dataclass(frozen=True)
class BuildPlan:
    """What one build writes, keeps and deletes; the same for every part of a parallel build
    (planning is deterministic in the inputs and the previous build's files)."""

    plans: list[ShardPlan]
    kept: list[str]
    drop: list[str]
    previous: pl.DataFrame | None
    old_index: dict | None


def plan_build(table: pl.DataFrame, levels: list[int], out_dir: Path,
               settings: ShardSettings, incremental: bool = True) -> BuildPlan:
    out_dir.mkdir(parents=True, exist_ok=True)
    records = build_order(sample_records(table, levels), settings.seed)
    previous, old_index = _previous_contents(out_dir, settings, incremental)
    plans, kept, drop = plan_shards(records, previous, settings)
    if previous is None and old_index is not None:  # a full rebuild: drop the rest
        drop = sorted({s["name"] for s in old_index["shards"]} - {p.name for p in plans})
    return BuildPlan(plans, kept, drop, previous, old_index)


def write_plans(out_dir: Path, plans: list[ShardPlan], settings: ShardSettings) -> list[dict]:
    """Write the tars and stats of ``plans`` (resizing in one pool); their stats."""
    paths = [p for plan in plans if not plan.rewrite for p in plan.rows["source_path"].to_list()]
    fresh = track(resize_many(paths, settings), total=len(paths), desc="shards", unit="img")
    return [_write_plan(out_dir, plan, _plan_images(out_dir, plan, fresh), settings)[0]
            for plan in plans]


def finish_build(out_dir: Path, plan: BuildPlan, written: list[dict], levels: list[int],
            settings: ShardSettings, start: float) -> ShardBuild:
    """contents.parquet and index.json (last) from the shards' stats; stale shards removed."""
    failed = [i for stats in written for i in stats["failed_image_ids"]]
    parts = [p.rows.filter(~pl.col("image_id").is_in(st["failed_image_ids"]))
             .with_columns(shard=pl.lit(p.name)).select(CONTENT_COLUMNS)
             for p, st in zip(plan.plans, written)]
    if plan.previous is not None:
        parts.append(plan.previous.filter(pl.col("shard").is_in(plan.kept))
                     .select(CONTENT_COLUMNS))
    contents = pl.concat(parts).sort("shard", "key").rechunk() if parts else pl.DataFrame()
    old_entries = {s["name"]: s for s in (plan.old_index or {}).get("shards", [])}
    entries = [old_entries[n] for n in plan.kept] + [
        {k: s[k] for k in ("name", "split", "fold", "count", "sha256", "bytes")} for s in written]
    index = {"shards": sorted(entries, key=lambda e: e["name"]), "levels": list(levels),
             "image_size": settings.image_size, "jpeg_quality": settings.jpeg_quality,
             "total_count": int(sum(e["count"] for e in entries))}
    with atomic_path(out_dir / layout.SHARD_CONTENTS_FILE) as tmp:
        contents.write_parquet(tmp)
    write_json_atomic(out_dir / layout.SHARD_INDEX_FILE, index)  # last: the build is complete
    for name in plan.drop:
        for file in (layout.shard_file(name), layout.shard_stats_file(name)):
            (out_dir / file).unlink(missing_ok=True)
    return ShardBuild(index, contents, written, plan.kept, plan.drop, failed,
                      round(time.perf_counter() - start, 3))


def build_shards(table: pl.DataFrame, levels: list[int], out_dir: Path,
                 settings: ShardSettings, incremental: bool = True) -> ShardBuild:
    """Write (or update) the shards for ``table`` (see ``sample_records`` for its columns).

    ``incremental=False`` (or changed image size / quality) rewrites every shard."""
    start = time.perf_counter()
    plan = plan_build(table, levels, out_dir, settings, incremental)
    return finish_build(out_dir, plan, write_plans(out_dir, plan.plans, settings), levels,
                   settings, start)


# --- inputs and the dataset descriptor -------------------------------------------------------

def shard_table(manifest: pl.DataFrame, splits: pl.DataFrame, labels: pl.DataFrame,
                image_path) -> pl.DataFrame:
    """Join kept manifest rows, their split and their labels into ``sample_records`` input.

    ``image_path(sha256) -> str``: where the stored image is (a local path or fsspec URL).
    Images with no split (excluded as bridges between splits) are left out.
    """
    base = manifest.select("image_id", "sha256", "lat_deg", "lon_deg", "source", "group_id",
                           "license", "attribution")
    table = base.join(splits.select("image_id", "split", "fold"), on="image_id", how="inner") \
        .join(labels, on="image_id", how="left")
    label_cols = [c for c in labels.columns if c.startswith("label_")]
    if table.select(pl.any_horizontal(pl.col(label_cols).is_null())).to_series().any():
        raise InputError("some split images have no hierarchy labels: rematerialize the "
                         "'hierarchy' asset after 'splits'")
    paths = [image_path(s) for s in table["sha256"].to_list()]
    return table.with_columns(source_path=pl.Series(paths, dtype=pl.String))


def write_descriptor(datasets_dir: Path, *, levels, num_classes: dict, manifest_sha256: str,
                     split_settings: dict, hierarchy_settings: dict, image_size: int,
                     created_at: str) -> dict:
    """``datasets/dataset.json``: what training reads (paths relative to ``datasets/``)."""
    descriptor = {
        "version": 1, "levels": list(levels),
        "level_files": {str(lv): layout.level_table(lv) for lv in levels},
        "children_files": {str(lv): layout.children_map(lv) for lv in levels},
        "labels_file": layout.LABELS, "splits_file": layout.SPLITS,
        "shard_index": layout.SHARD_INDEX,
        "num_classes": {str(k): int(v) for k, v in num_classes.items()},
        "manifest_hash": manifest_sha256, "splits": split_settings,
        "hierarchy": hierarchy_settings, "image_size": image_size, "created_at": created_at}
    write_json_atomic(datasets_dir / layout.DESCRIPTOR, descriptor)
    return descriptor


def verify_shards(out_dir: Path, index: dict) -> dict:
    """Read every shard back with webdataset: counts, checksums, keys and JSON records."""
    import webdataset as wds

    problems: list[str] = []
    image_ids: list[str] = []
    for entry in index["shards"]:
        path = out_dir / layout.shard_file(entry["name"])
        if not path.exists():
            problems.append(f"{entry['name']}: missing")
            continue
        if sha256_file(path) != entry["sha256"]:
            problems.append(f"{entry['name']}: sha256 differs from the index")
        n = 0
        for sample in wds.DataPipeline(wds.SimpleShardList([str(path)]),
                                       wds.tarfile_to_samples(handler=wds.reraise_exception)):
            record = json.loads(sample["json"])
            ok = "jpg" in sample and record.get("split") == entry["split"] \
                and int(record.get("fold")) == int(entry["fold"])
            if not ok:
                problems.append(f"{entry['name']}/{sample['__key__']}: bad sample")
            image_ids.append(record["image_id"])
            n += 1
        if n != entry["count"]:
            problems.append(f"{entry['name']}: {n} samples, index says {entry['count']}")
    return {"problems": problems, "image_ids": image_ids}
