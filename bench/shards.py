"""Shard building throughput: geoscout's shard writer against img2dataset, in one run.

Both resize the same stored JPEGs (the 800 real 640x640 Croatia Street View photos in
../shared/data/real, repeated ``--repeat`` times to amortise start-up) so that the shorter side
is 256 px, JPEG quality 90, and write WebDataset tars, with 2 processes each. img2dataset runs
from its own virtualenv under bench/out/ (created on first use; it pins old webdataset and
pandas) on a ``file://`` URL list of the same files.

    .venv/bin/python bench/shards.py [--repeat 4] [--target 3.0]

``RESULT shards speedup=<median over paired rounds of ours / img2dataset images/s>
target=3.0``. Also printed: CPU time per image of each (user + system, children included),
which does not depend on what else runs on the machine.

Parallel parts (``geo_assets.shard_parts``, as separate pods would run them): the same images
written by 1, 2 and all cores' worth of part processes (one process each, then the index
assembly), wall time from the first start to the index: ``RESULT shards_parallel
efficiency=<images/s with N parts / (N x images/s with 1 part)> target=0.8`` (N = all cores).
``--parallel-only`` skips the img2dataset comparison.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import OUT, VENV, cpu_seconds, ensure_img2dataset
from geo_assets.settings import ShardSettings
from geo_assets.shard_parts import assemble_shards
from geo_assets.shards import build_shards

IMAGES = ROOT.parent / "shared" / "data" / "real" / "croatia_streetview"


def image_paths(repeat: int) -> list[Path]:
    labels = pl.read_csv(IMAGES / "labels.csv")
    return [IMAGES / f for f in labels["filename"]] * repeat


def bench_table(paths: list[Path]) -> pl.DataFrame:
    n = len(paths)
    return pl.DataFrame({
        "image_id": [f"bench:{i}" for i in range(n)],
        # a distinct fake digest per copy: the same file repeated is a new sample here
        "sha256": [hashlib.sha256(f"{i}".encode()).hexdigest() for i in range(n)],
        "source_path": [str(p) for p in paths], "lat_deg": [45.0] * n, "lon_deg": [16.0] * n,
        "source": ["streetview"] * n, "group_id": [str(i // 4) for i in range(n)],
        "license": ["test"] * n, "attribution": ["test"] * n, "split": ["train"] * n,
        "fold": [0] * n, "cell_1": ["3"] * n, "label_1": [0] * n})


def run_ours(paths: list[Path], out: Path, workers: int) -> tuple[int, float, float]:
    """(images, wall seconds, CPU seconds) of ``build_shards`` (pool start-up included)."""
    shutil.rmtree(out, ignore_errors=True)
    n = len(paths)
    table = bench_table(paths)
    start, cpu = time.perf_counter(), cpu_seconds()
    build = build_shards(table, [1], out, ShardSettings(image_size=256, jpeg_quality=90,
                                                        shard_size=1000, workers=workers))
    seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu
    assert build.index["total_count"] == n, build.failed_image_ids[:3]
    return n, seconds, cpu


def run_img2dataset(exe: Path, paths: list[Path], out: Path,
                    workers: int) -> tuple[int, float, float]:
    """(images written, wall seconds, CPU seconds) of the img2dataset command."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    urls = out / "urls.txt"
    urls.write_text("".join(f"file://{p}\n" for p in paths))
    cmd = [str(exe), "--url_list", str(urls), "--input_format", "txt",
           "--output_folder", str(out / "shards"), "--output_format", "webdataset",
           "--image_size", "256", "--resize_mode", "keep_ratio", "--encode_quality", "90",
           "--processes_count", str(workers), "--thread_count", "16",
           "--number_sample_per_shard", "1000", "--timeout", "30", "--retries", "0"]
    start, cpu = time.perf_counter(), cpu_seconds()
    subprocess.run(cmd, check=True, capture_output=True,
                   env={"PATH": str(VENV / "bin"), "NO_ALBUMENTATIONS_UPDATE": "1",
                        "HOME": str(out)})
    seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu
    ok = sum(json.loads(p.read_text())["successes"]
             for p in (out / "shards").glob("*_stats.json"))
    if ok < len(paths):
        print(f"img2dataset: only {ok} of {len(paths)} images succeeded")
    return ok, seconds, cpu


def run_parts(paths: list[Path], out: Path, n_parts: int, shard_size: int) -> float:
    """Wall seconds of ``n_parts`` part processes (one core each) plus the assembly."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    table_path = out.parent / f"{out.name}-input.parquet"
    bench_table(paths).write_parquet(table_path)
    settings = json.dumps({"image_size": 256, "jpeg_quality": 90, "shard_size": shard_size,
                           "workers": 1})
    cmd = [sys.executable, "-m", "geo_assets.shard_parts", "part", "--table", str(table_path),
           "--levels", "1", "--out", str(out), "--n-parts", str(n_parts),
           "--settings", settings]
    start = time.perf_counter()
    procs = [subprocess.Popen([*cmd, "--part", str(i)], cwd=ROOT, stdout=subprocess.DEVNULL)
             for i in range(n_parts)]
    if any(p.wait() for p in procs):
        raise RuntimeError("a shard part failed")
    build = assemble_shards(pl.read_parquet(table_path), [1], out, ShardSettings(
        image_size=256, jpeg_quality=90, shard_size=shard_size, workers=1))
    seconds = time.perf_counter() - start
    assert build.index["total_count"] == len(paths), build.failed_image_ids[:3]
    return seconds


def parallel_figure(paths: list[Path], shard_size: int, target: float) -> None:
    """Images/s with 1, 2 and all cores' worth of parts; scaling efficiency at all cores."""
    cores = os.cpu_count() or 1
    counts = sorted({1, min(2, cores), cores})
    rates = {}
    for n in counts:
        rates[n] = len(paths) / run_parts(paths, OUT / f"bench_shard_parts_{n}", n, shard_size)
        print(f"{n:3d} part(s) {rates[n]:8.1f} images/s   efficiency "
              f"{rates[n] / (n * rates[1]):.2f}")
    print(f"{len(paths)} images, shards of {shard_size}, {cores} cores, load average "
          f"{os.getloadavg()[0]:.1f}")
    print(f"RESULT shards_parallel efficiency={rates[cores] / (cores * rates[1]):.2f} "
          f"target={target}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=4, help="copies of the 800 images (4)")
    parser.add_argument("--workers", type=int, default=2, help="processes for both (2)")
    parser.add_argument("--rounds", type=int, default=3, help="paired rounds (3; median)")
    parser.add_argument("--target", type=float, default=3.0, help="speed-up to reach (3.0)")
    parser.add_argument("--parallel-only", action="store_true",
                        help="only the parallel-parts figure, no img2dataset")
    parser.add_argument("--parallel-shard-size", type=int, default=100,
                        help="samples per shard in the parallel figure (100)")
    parser.add_argument("--parallel-target", type=float, default=0.8,
                        help="scaling efficiency to reach (0.8)")
    args = parser.parse_args(argv)
    if not (IMAGES / "labels.csv").exists():
        print(f"skipped: {IMAGES} is absent")
        print(f"RESULT shards speedup=skipped target={args.target}")
        print(f"RESULT shards_parallel efficiency=skipped target={args.parallel_target}")
        return 0
    paths = image_paths(args.repeat)
    if args.parallel_only:
        parallel_figure(paths, args.parallel_shard_size, args.parallel_target)
        return 0
    exe = ensure_img2dataset().parent / "img2dataset"
    totals = {"img2dataset": [0, 0.0, 0.0], "geoscout": [0, 0.0, 0.0]}
    ratios = []
    for _ in range(args.rounds):  # paired and interleaved: a change in machine load hits both
        runs = {"img2dataset": run_img2dataset(exe, paths, OUT / "bench_shards_img2dataset",
                                               args.workers),
                "geoscout": run_ours(paths, OUT / "bench_shards_ours", args.workers)}
        ratios.append((runs["geoscout"][0] / runs["geoscout"][1])
                      / (runs["img2dataset"][0] / runs["img2dataset"][1]))
        for name, run in runs.items():
            totals[name] = [a + b for a, b in zip(totals[name], run)]
    print(f"{len(paths)} images of 640x640 -> shorter side 256, {args.workers} processes, "
          f"{args.rounds} rounds, load average {os.getloadavg()[0]:.1f} (2 cores)")
    for name, (n, wall, cpu) in totals.items():
        print(f"{name:12s} {n / wall:8.1f} images/s   {1000 * cpu / n:6.2f} CPU ms/image")
    cpu_ratio = (totals["img2dataset"][2] / totals["img2dataset"][0]) / (
        totals["geoscout"][2] / totals["geoscout"][0])
    print(f"per-round speed-ups {[round(r, 2) for r in ratios]}; CPU time per image "
          f"img2dataset / geoscout = {cpu_ratio:.2f}")
    print(f"RESULT shards speedup={statistics.median(ratios):.2f} target={args.target}")
    parallel_figure(paths, args.parallel_shard_size, args.parallel_target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
