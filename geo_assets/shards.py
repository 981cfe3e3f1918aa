"""WebDataset shards: resized JPEGs with one JSON record each, written atomically.

The bookkeeping (sample table, build order, which shard holds which sample, the JSON
records) is ``geo_assets.shard_plan``; its names are re-exported here.

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
import itertools
import json
import os
import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import polars as pl
from PIL import Image, ImageOps

from geo_assets import layout
from geo_assets.images import check_header, to_8bit
from geo_assets.progress import track
from geo_assets.settings import ImageSettings, ShardSettings
from geo_assets.shard_plan import (  # noqa: F401 - the bookkeeping, re-exported
    CONTENT_COLUMNS,
    KEY_HEX_DIGITS,
    RECORD_COLUMNS,
    ShardPlan,
    build_order,
    check_table,
    plan_shards,
    sample_records,
    shard_name,
    shard_table,
)
from geo_assets.storage import atomic_path, sha256_file, write_json_atomic

FIXED_MTIME = 1_600_000_000  # any integer constant: byte-reproducible tars; an integer
# also keeps tarfile from adding a pax header (a float mtime) before every member


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


def _batched(items: Iterator[str], n: int) -> Iterator[list[str]]:
    while batch := list(itertools.islice(items, n)):  # itertools.batched from Python 3.12
        yield batch


def resize_many(paths: Iterable[str], settings: ShardSettings) -> Iterator[tuple[bytes | None,
                                                                               str | None]]:
    """Resized bytes (or an error) for each path, in input order, from a process pool.

    ``paths`` is read a chunk at a time and at most ``4 * workers`` chunks are in flight, so
    memory stays bounded however many images there are.
    """
    chunks = ((list(b), settings.image_size, settings.jpeg_quality, settings.threads)
              for b in _batched(iter(paths), settings.chunk_size))
    first = list(itertools.islice(chunks, 2))
    if settings.workers == 1 or len(first) <= 1:  # in this process: no thread pool left over
        for paths_, size, quality, _ in itertools.chain(first, chunks):
            yield from _resize_chunk((paths_, size, quality, 1))
        return
    window = 4 * settings.workers
    chunks = itertools.chain(first, chunks)
    with ProcessPoolExecutor(settings.workers, mp_context=get_context("fork")) as pool:
        pending = deque(pool.submit(_resize_chunk, c) for c in itertools.islice(chunks, window))
        for chunk in chunks:
            yield from pending.popleft().result()
            pending.append(pool.submit(_resize_chunk, chunk))
        while pending:
            yield from pending.popleft().result()


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


def plan_fingerprint(plan: ShardPlan, settings: ShardSettings,
                     rows: pl.DataFrame | None = None) -> str:
    """What a shard's bytes depend on: its samples' keys and records, image size and quality.
    Stored in the shard's stats, so the index assembly knows the tar is this build's.
    ``rows``: ``plan.rows`` when the caller has them already."""
    h = hashlib.sha256(f"{settings.image_size}:{settings.jpeg_quality}\n".encode())
    rows = plan.rows if rows is None else rows
    for key, record_sha in rows.select("key", "record_sha256").iter_rows():
        h.update(f"{key}:{record_sha}\n".encode())
    return h.hexdigest()


def _write_plan(out_dir: Path, plan: ShardPlan, images: Iterator[tuple[bytes | None, str | None]],
                settings: ShardSettings) -> tuple[dict, list[str]]:
    start = time.perf_counter()
    errors: dict[str, int] = {}
    failed: list[str] = []
    rows = plan.rows

    def samples():
        for (key, image_id, record), (jpg, err) in zip(
                rows.select("key", "image_id", "record").iter_rows(), images):
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
             "plan_sha256": plan_fingerprint(plan, settings, rows)}
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
                       incremental: bool) -> tuple[pl.LazyFrame | None, dict | None]:
    """A scan of the last build's contents, when it can be reused (read in parts: the
    planning's columns, then the kept shards' rows), and its index (None if none)."""
    index = read_index(out_dir)
    contents = out_dir / layout.SHARD_CONTENTS_FILE
    if index is None or not contents.exists():
        return None, index
    same = (index.get("image_size") == settings.image_size
            and index.get("jpeg_quality") == settings.jpeg_quality)
    return (pl.scan_parquet(contents) if same and incremental else None), index


def _plan_images(out_dir: Path, plan: ShardPlan,
                 fresh: Iterator[tuple[bytes | None, str | None]]):
    if not plan.rewrite:
        return fresh
    old = read_tar_images(out_dir / layout.shard_file(plan.name))
    return ((old.get(k), None if k in old else "missing from the old shard")
            for k in plan.table["sha256"].gather(plan.index).str.slice(0, KEY_HEX_DIGITS))


@dataclass(frozen=True)
class BuildPlan:
    """What one build writes, keeps and deletes; the same for every part of a parallel build
    (planning is deterministic in the inputs and the previous build's files)."""

    plans: list[ShardPlan]
    kept: list[str]
    drop: list[str]
    previous: pl.LazyFrame | None  # a scan of the last build's contents.parquet
    old_index: dict | None


def plan_build(table: pl.DataFrame, levels: list[int], out_dir: Path,
               settings: ShardSettings, incremental: bool = True) -> BuildPlan:
    """Check ``table`` (``shard_table``'s columns), order it and plan the build against the
    previous one in ``out_dir``; no record is made here (see ``ShardPlan.rows``)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    check_table(table, levels)
    order = build_order(table, settings.seed)
    previous, old_index = _previous_contents(out_dir, settings, incremental)
    plans, kept, drop = plan_shards(table, order, previous, settings, levels)
    if previous is None and old_index is not None:  # a full rebuild: drop the rest
        drop = sorted({s["name"] for s in old_index["shards"]} - {p.name for p in plans})
    return BuildPlan(plans, kept, drop, previous, old_index)


def write_plans(out_dir: Path, plans: list[ShardPlan], settings: ShardSettings) -> list[dict]:
    """Write the tars and stats of ``plans`` (resizing in one pool); their stats."""
    fresh_plans = [plan for plan in plans if not plan.rewrite]
    paths = itertools.chain.from_iterable(plan.source_paths for plan in fresh_plans)
    fresh = track(resize_many(paths, settings), total=sum(p.index.len() for p in fresh_plans),
                  desc="shards", unit="img")
    return [_write_plan(out_dir, plan, _plan_images(out_dir, plan, fresh), settings)[0]
            for plan in plans]


def _contents(plan: BuildPlan, written: list[dict]) -> pl.DataFrame:
    """CONTENT_COLUMNS of every sample in a shard, sorted by shard and key: each shard's rows
    sorted on their own and put in name order, so the whole table is never sorted (one copy
    at the end instead of two: at 5M samples about 0.6 GiB each)."""
    parts = [(p.name, p.rows.filter(~pl.col("image_id").is_in(st["failed_image_ids"]))
              .with_columns(shard=pl.lit(p.name)).select(CONTENT_COLUMNS).sort("key"))
             for p, st in zip(plan.plans, written)]
    if plan.previous is not None:
        kept = plan.previous.filter(pl.col("shard").is_in(plan.kept)).select(CONTENT_COLUMNS) \
            .collect()  # before finish_build replaces the file
        parts += [(name, part.sort("key")) for (name,), part in kept.group_by(["shard"])]
    parts.sort(key=lambda part: part[0])
    frames = [frame for _, frame in parts]
    parts.clear()
    return pl.concat(frames, rechunk=True) if frames else pl.DataFrame()


def finish_build(out_dir: Path, plan: BuildPlan, written: list[dict], levels: list[int],
            settings: ShardSettings, start: float) -> ShardBuild:
    """contents.parquet and index.json (last) from the shards' stats; stale shards removed."""
    failed = [i for stats in written for i in stats["failed_image_ids"]]
    contents = _contents(plan, written)
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
    """Write (or update) the shards for ``table`` (``shard_table``'s columns; see
    ``sample_records``).

    ``incremental=False`` (or changed image size / quality) rewrites every shard."""
    start = time.perf_counter()
    plan = plan_build(table, levels, out_dir, settings, incremental)
    return finish_build(out_dir, plan, write_plans(out_dir, plan.plans, settings), levels,
                   settings, start)


# --- the dataset descriptor ------------------------------------------------------------------

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
