"""Benchmark: image requests per second that the demo server answers on loopback.

The server runs in its own process (as ``geoscout demo-server`` would); client threads in
this process fetch Mapillary thumbnails (1024 px) and Street View images (640x640) over
keep-alive connections. Two passes over the same URLs: cold (every image rendered and
encoded on first request) and warm (served from the render cache). The figure of merit is
the warm rate; the cold rate says how fast a first crawl can go.

    .venv/bin/python bench/demo_server.py [--images 600] [--threads 4]
"""

from __future__ import annotations

import argparse
import http.client
import multiprocessing as mp
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import serve_demo

TARGET_PER_S = 500




def image_paths(base: str, n: int, preset: str) -> list[str]:
    """Signed thumbnail paths from ``/images`` listings, plus Street View image paths."""
    from geo_assets.demo.world import generate_world

    world = generate_world(0, preset)
    paths: list[str] = []
    session = requests.Session()
    for im in world.images[:: max(1, len(world.images) // n)]:
        box = f"{im.lon - 0.004},{im.lat - 0.004},{im.lon + 0.004},{im.lat + 0.004}"
        r = session.get(f"{base}/mapillary/images", timeout=10, params={
            "bbox": box, "fields": "id,thumb_1024_url", "limit": 1,
            "access_token": "demo-token"})
        r.raise_for_status()
        url = urlsplit(r.json()["data"][0]["thumb_1024_url"])
        paths.append(f"{url.path}?{url.query}")
        if len(paths) >= n * 3 // 4:
            break
    for p in world.panoramas[: n - len(paths)]:
        paths.append(f"/google/maps/api/streetview?pano={p.pano_id}&size=640x640&heading=90"
                     "&key=demo-key")
    return paths


def fetch_all(base: str, paths: list[str], threads: int) -> tuple[float, int]:
    """(seconds, bytes) to GET every path once with ``threads`` keep-alive clients."""
    netloc = urlsplit(base).netloc
    chunks = [paths[i::threads] for i in range(threads)]
    total = [0] * threads

    def worker(k: int) -> None:
        conn = http.client.HTTPConnection(netloc, timeout=30)
        for path in chunks[k]:
            conn.request("GET", path)
            resp = conn.getresponse()
            body = resp.read()
            if resp.status != 200:
                raise RuntimeError(f"{path}: HTTP {resp.status}")
            total[k] += len(body)
        conn.close()

    start = time.perf_counter()
    pool = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return time.perf_counter() - start, sum(total)


def render_ms(preset: str, n: int = 100) -> float:
    """Milliseconds to render and encode one 1024x768 thumbnail (this process, no HTTP)."""
    from geo_assets.demo.render import render_image
    from geo_assets.demo.world import generate_world

    world = generate_world(0, preset)
    images = world.images[:n]
    start = time.perf_counter()
    for im in images:
        render_image(world, im, 1024, 768)
    return (time.perf_counter() - start) / len(images) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=600, help="distinct images (default 600)")
    parser.add_argument("--threads", type=int, default=4, help="client threads (default 4)")
    parser.add_argument("--warm-passes", type=int, default=3, help="warm passes (default 3)")
    parser.add_argument("--preset", default="demo", help="world preset (default demo)")
    args = parser.parse_args()
    ctx = mp.get_context("spawn")
    queue, stop = ctx.Queue(), ctx.Event()
    proc = ctx.Process(target=serve_demo, args=(args.preset, queue, stop), daemon=True)
    proc.start()
    try:
        base = queue.get(timeout=60)
        paths = image_paths(base, args.images, args.preset)
        cold_s, cold_bytes = fetch_all(base, paths, args.threads)
        warm_s = sum(fetch_all(base, paths, args.threads)[0] for _ in range(args.warm_passes))
    finally:
        stop.set()
        proc.join(timeout=10)
    n = len(paths)
    print(f"render + encode 1024x768 thumbnail: {render_ms(args.preset):.1f} ms")
    cold, warm = n / cold_s, n * args.warm_passes / warm_s
    print(f"images: {n} distinct ({cold_bytes / n / 1024:.0f} KiB mean), "
          f"{args.threads} client threads, server in its own process")
    print(f"cold (render + encode on first request): {cold:.0f} requests/s")
    print(f"warm (render cache):                     {warm:.0f} requests/s "
          f"({warm / cold:.1f}x cold)")
    print(f"RESULT demo_server requests_per_s={warm:.0f} target={TARGET_PER_S}")


if __name__ == "__main__":
    main()
