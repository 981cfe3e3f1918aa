"""Pieces the benchmarks share: img2dataset's own virtualenv, a demo server in a child
process, and CPU time that counts waited-for worker processes."""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
VENV = OUT / "img2dataset-venv"


def ensure_img2dataset() -> Path:
    """Python of a virtualenv with img2dataset (it pins old webdataset and pandas, so it
    never goes into the project's environment); created on first use."""
    python = VENV / "bin" / "python"
    if python.exists() and subprocess.run([python, "-c", "import img2dataset"], check=False,
                                          capture_output=True).returncode == 0:
        return python
    OUT.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    subprocess.run([python, "-m", "pip", "install", "-q", "img2dataset"], check=True)
    return python


def serve_demo(preset: str, queue, stop, latency_s: float = 0.0) -> None:
    """Child-process target: serve the seed-0 demo world (``latency_s`` added to every
    reply), put its URL on ``queue``, run until ``stop`` is set."""
    from geo_assets.demo.server import DemoServer
    from geo_assets.demo.world import generate_world

    with DemoServer(generate_world(0, preset), latency_s=latency_s) as server:
        queue.put(server.url)
        stop.wait()


def cpu_seconds() -> float:
    """CPU time of this process and of its waited-for descendants."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime
