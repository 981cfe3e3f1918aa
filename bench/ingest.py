"""Benchmark: images/s through geoscout's ingestion against img2dataset, in one run.

The demo server runs in its own process. geoscout crawls every cell of the demo world that
has Mapillary imagery with ``ingest_cell`` (coverage tiles, bbox search, thumbnail download,
full validation, brightness, perceptual hash, filters, content-addressed storage with fsync,
Parquet manifest and stats), timed end to end, listing included, although img2dataset is
handed its URL list for free (the rate without listing is printed as well). img2dataset (installed
into its own virtualenv under ``bench/out/``) then fetches the same thumbnails, from fresh
signed URLs, with ``resize_mode="no"`` and ``skip_reencode=True`` into a files folder; its
time covers its ``download()`` call only. A warm-up pass first fills the server's render
cache so that neither side pays for rendering; the two sides then run alternately
``--repeats`` times and each side's best run counts (the machine is shared).

Two comparisons, each against its own demo server: on quiet loopback, and with
``--latency-ms`` (150) added to every reply of the server, as across the internet, where the
network is the bottleneck and what counts is how many requests stay in flight (geoscout:
``--fetch-threads`` downloads in flight, decode/checks/storage on ``--workers`` threads;
img2dataset: processes x threads). Both sides fetch the same URLs from the same server.

    .venv/bin/python bench/ingest.py [--preset demo] [--level 5] [--workers 4]
        [--fetch-threads 64] [--latency-ms 150]

Ends with ``RESULT ingest speed_ratio=<geoscout images/s end to end / img2dataset images/s>
target=1.2`` (loopback) and ``RESULT ingest_latency speed_ratio=... target=1.2``, each after
a line with the machine's load average.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import OUT, ensure_img2dataset, serve_demo

TARGET = 1.2

I2D_RUNNER = """
import json, sys, time, logging
logging.disable(logging.WARNING)
from img2dataset import download
args = json.loads(sys.argv[1])
start = time.perf_counter()
download(**args)
print("ELAPSED", time.perf_counter() - start)
"""






def crawl_cells(preset: str, level: int) -> list[str]:
    from geo_assets.cells import points_to_cells
    from geo_assets.demo.world import generate_world

    lat, lon = generate_world(0, preset).image_lat_lon
    counts = Counter(points_to_cells(np.asarray(lat), np.asarray(lon), level))
    return sorted(counts)


def source_for(base: str, workers: int):
    """A Mapillary source with ``workers`` connections per host and listing threads."""
    from geo_assets.clients.mapillary import MapillaryClient, MapillarySource
    from geo_assets.settings import HttpSettings, MapillarySettings

    http = HttpSettings(requests_per_s=0, pool_size=max(32, workers))
    client = MapillaryClient("demo-token", graph_url=f"{base}/mapillary",
                             tiles_url=f"{base}/mapillary-tiles",
                             settings=MapillarySettings(http=http, list_workers=32))
    return MapillarySource(client)


def fresh_urls(base: str, cells: list[str], target: int, workers: int) -> list[str]:
    """The thumbnail URLs (freshly signed) of every candidate geoscout would fetch."""
    from geo_assets.cells import points_to_cells
    from geo_assets.clients.base import ListRequest

    source = source_for(base, workers)
    urls = []
    for cell in cells:
        cands = source.list_candidates(ListRequest(cell, target))
        lat = np.array([c.lat_deg for c in cands])
        lon = np.array([c.lon_deg for c in cands])
        inside = points_to_cells(lat, lon, len(cell)) == cell if cands else []
        urls += [c.fetch_ref for c, ok in zip(cands, inside) if ok]
    return urls


def warm(urls: list[str], threads: int = 32) -> None:
    chunks = [urls[i::threads] for i in range(threads)]

    def worker(chunk):
        with requests.Session() as s:
            for u in chunk:
                s.get(u, timeout=30)

    pool = [threading.Thread(target=worker, args=(c,)) for c in chunks]
    for t in pool:
        t.start()
    for t in pool:
        t.join()


def run_geoscout(base: str, cells: list[str], target: int, workers: int,
                 fetch_threads: int) -> dict:
    from geo_assets.ingest import ingest_cell
    from geo_assets.merge import merge_manifests
    from geo_assets.settings import IngestSettings
    from geo_assets.storage import DataRoot

    root = DataRoot(tempfile.mkdtemp(prefix="geoscout-bench-", dir=OUT))
    settings = IngestSettings(target_per_cell=target, workers=workers,
                              fetch_threads=fetch_threads, max_in_flight=fetch_threads)
    source = source_for(base, fetch_threads)
    start = time.perf_counter()
    fetched = kept = rows = 0
    listing = 0.0
    for cell in cells:
        r = ingest_cell(source, cell, root, settings)
        fetched += r.stats["downloaded"]
        kept += r.n_kept
        rows += r.n_rows
        listing += r.stats["seconds"]["list_s"]
    merged = merge_manifests(root)
    seconds = time.perf_counter() - start
    shutil.rmtree(root.base, ignore_errors=True)
    return {"seconds": seconds, "listing_s": listing, "pipeline_s": seconds - listing,
            "images": fetched, "kept": kept, "rows": rows, "merged_sha256": merged.sha256[:12]}


def run_img2dataset(python: Path, urls: list[str], processes: int, threads: int) -> dict:
    work = Path(tempfile.mkdtemp(prefix="i2d-bench-", dir=OUT))
    url_list = work / "urls.txt"
    url_list.write_text("\n".join(urls) + "\n")  # freshly signed demo links; deleted below
    args = {"url_list": str(url_list), "output_folder": str(work / "images"),
            "output_format": "files", "input_format": "txt", "resize_mode": "no",
            "skip_reencode": True, "processes_count": processes, "thread_count": threads,
            "timeout": 30, "retries": 2, "number_sample_per_shard": 100_000,
            "distributor": "multiprocessing"}
    env = {"NO_ALBUMENTATIONS_UPDATE": "1", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([python, "-c", I2D_RUNNER, json.dumps(args)], check=False,
                          capture_output=True,
                          text=True, env=env, timeout=1800)
    elapsed = next((float(line.split()[1]) for line in proc.stdout.splitlines()
                    if line.startswith("ELAPSED")), None)
    stats = [json.loads(p.read_text()) for p in (work / "images").glob("*_stats.json")]
    ok = sum(s.get("successes", 0) for s in stats)
    shutil.rmtree(work, ignore_errors=True)
    if elapsed is None:
        raise RuntimeError(f"img2dataset failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return {"seconds": elapsed, "images": ok}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="demo", help="demo world preset (default demo)")
    parser.add_argument("--level", type=int, default=5, help="crawl cell level (default 5)")
    parser.add_argument("--target", type=int, default=2000, help="images per cell (2000)")
    parser.add_argument("--workers", type=int, default=4,
                        help="geoscout threads checking and storing images (default 4)")
    parser.add_argument("--fetch-threads", type=int, default=64,
                        help="geoscout downloads in flight (default 64)")
    parser.add_argument("--i2d-processes", type=int, default=2, help="img2dataset processes")
    parser.add_argument("--i2d-threads", type=int, default=32, help="img2dataset threads")
    parser.add_argument("--latency-ms", type=float, default=150.0,
                        help="added to every reply in the second comparison (default 150)")
    parser.add_argument("--repeats", type=int, default=2,
                        help="alternating runs per side; the best of each counts (default 2)")
    return parser


def compare(args, python: Path, latency_s: float) -> tuple[dict, dict, int]:
    """(geoscout's best run, img2dataset's best run, URLs) against a server of this latency."""
    ctx = mp.get_context("spawn")
    queue, stop = ctx.Queue(), ctx.Event()
    server = ctx.Process(target=serve_demo, args=(args.preset, queue, stop, latency_s),
                         daemon=True)
    server.start()
    try:
        base = queue.get(timeout=120)
        cells = crawl_cells(args.preset, args.level)
        warm(fresh_urls(base, cells, args.target, args.fetch_threads))
        runs_ours, runs_theirs = [], []
        for _ in range(args.repeats):  # alternate, keep each side's best (least disturbed)
            runs_ours.append(run_geoscout(base, cells, args.target, args.workers,
                                          args.fetch_threads))
            urls = fresh_urls(base, cells, args.target, args.fetch_threads)
            runs_theirs.append(run_img2dataset(python, urls, args.i2d_processes,
                                               args.i2d_threads))
    finally:
        stop.set()
        server.join(timeout=10)
    print("all runs (s): geoscout " + ", ".join(f"{r['seconds']:.1f}" for r in runs_ours)
          + "; img2dataset " + ", ".join(f"{r['seconds']:.1f}" for r in runs_theirs))
    return (min(runs_ours, key=lambda r: r["seconds"]),
            min(runs_theirs, key=lambda r: r["seconds"] / max(1, r["images"])), len(urls))


def report(name: str, args, ours: dict, theirs: dict, n_urls: int, latency_ms: float) -> None:
    ours_rate = ours["images"] / ours["pipeline_s"]
    ours_e2e = ours["images"] / ours["seconds"]
    theirs_rate = theirs["images"] / theirs["seconds"]
    print(f"[{name}] {latency_ms:g} ms added per reply; thumbnails: {n_urls}")
    print(f"geoscout:    {ours['images']} images in {ours['seconds']:.2f} s = {ours_e2e:.1f}/s "
          f"end to end: listing (coverage tiles, bbox search) {ours['listing_s']:.2f} s, then "
          f"fetch, validation, filters, storage, manifests, merge {ours['pipeline_s']:.2f} s = "
          f"{ours_rate:.1f}/s ({ours_rate / theirs_rate:.2f}x img2dataset without listing); "
          f"{ours['kept']} kept of {ours['rows']} rows")
    print(f"img2dataset: {theirs['images']} images in {theirs['seconds']:.2f} s = "
          f"{theirs_rate:.1f}/s (fetch, decode, sha256, files; resize_mode=no; URLs given)")
    load = os.getloadavg()
    print(f"machine load average (1, 5, 15 min): {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} "
          f"on {os.cpu_count()} CPUs")
    print(f"RESULT {name} speed_ratio={ours_e2e / theirs_rate:.2f} target={TARGET}")


def main() -> None:
    args = _parser().parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    python = ensure_img2dataset()
    for name, latency_ms in (("ingest", 0.0), ("ingest_latency", args.latency_ms)):
        ours, theirs, n_urls = compare(args, python, latency_ms / 1000)
        report(name, args, ours, theirs, n_urls, latency_ms)


if __name__ == "__main__":
    main()
