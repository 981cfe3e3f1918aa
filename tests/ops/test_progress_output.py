"""Progress of a real long step (building shards from real JPEGs), as a person sees it: in a
terminal (a pty) a redrawn bar with counts, rate and ETA; in a log (a pipe) whole lines, each
count once, no carriage returns. Each run is a child process, as a CLI user's would be."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import shared_data_path

PROJECT = Path(__file__).resolve().parents[2]
N_IMAGES = 24
CHILD = f"""
import sys
from pathlib import Path
from geo_assets.settings import ShardSettings
from geo_assets.shards import build_shards
from tests.dataset.helpers import croatia_table, with_fake_labels
table = with_fake_labels(croatia_table(Path(sys.argv[1]), limit={N_IMAGES}), [1, 3])
build = build_shards(table, [1, 3], Path(sys.argv[2]), ShardSettings(shard_size=10, workers=1))
print("built", build.index["total_count"], file=sys.stderr)
"""
ETA = re.compile(r"<\d\d:\d\d")  # tqdm's "elapsed<remaining"
COUNT = re.compile(rf"\b(\d+)/{N_IMAGES}\b")


def _child(tmp_path: Path, env: dict[str, str]) -> list[str]:
    folder = shared_data_path("real", "croatia_streetview")
    return [sys.executable, "-c", CHILD, str(folder), str(tmp_path / "shards")], \
        {**os.environ, "PYTHONPATH": str(PROJECT), **env}


def _run_in_pty(cmd: list[str], env: dict[str, str], timeout: float = 120.0) -> str:
    """The child's stderr as a terminal shows it (the raw bytes, carriage returns kept)."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen(cmd, cwd=PROJECT, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=follower)
    os.close(follower)
    chunks = []
    try:
        while True:
            ready, _, _ = select.select([leader], [], [], timeout)
            if not ready:
                pytest.fail("the child printed nothing for too long")
            try:
                data = os.read(leader, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(leader)
        assert proc.wait(timeout=timeout) == 0
    return b"".join(chunks).decode(errors="replace")


def test_terminal_shows_a_bar_with_counts_rate_and_eta(tmp_path):
    cmd, env = _child(tmp_path, {"GEOSCOUT_PROGRESS": "auto"})
    out = _run_in_pty(cmd, env)
    assert f"built {N_IMAGES}" in out
    frames = [f for f in re.split(r"[\r\n]", out) if f.startswith("shards:")]
    assert len(frames) >= 2, out  # redrawn in place, not printed once at the end
    assert "\r" in out
    assert any(f"{N_IMAGES}/{N_IMAGES}" in f for f in frames), frames
    assert all(ETA.search(f) for f in frames[1:]), frames  # the first: "0/N [00:00<?"
    assert any("img/s" in f for f in frames), frames


def test_log_output_is_line_based_without_duplicates(tmp_path):
    cmd, env = _child(tmp_path, {"GEOSCOUT_PROGRESS": "auto",
                                 "GEOSCOUT_PROGRESS_EVERY": "0"})
    proc = subprocess.run(cmd, cwd=PROJECT, env=env, capture_output=True, text=True, check=False,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "\r" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("shards:")]
    counts = [int(COUNT.search(ln).group(1)) for ln in lines]
    assert counts == sorted(set(counts)), lines  # each count once, in order
    assert counts[-1] == N_IMAGES and len(counts) > 1
    assert all(ETA.search(ln) for ln in lines)


def test_progress_off_is_silent(tmp_path):
    cmd, env = _child(tmp_path, {"GEOSCOUT_PROGRESS": "off"})
    proc = subprocess.run(cmd, cwd=PROJECT, env=env, capture_output=True, text=True, check=False,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "shards:" not in proc.stderr and f"built {N_IMAGES}" in proc.stderr


# --- log lines while a bar is open: real training (two epochs of the tiny CNN), one log line
# per step (--print-freq 1), the validation line per epoch, an epoch bar inside the overall one.
TRAIN_CHILD = """
import sys
from pathlib import Path
sys.path.insert(0, str(Path(sys.argv[2]) / "tests" / "training"))
from tiny_dataset import build_tiny_dataset
from training.config import TrainConfig
from training.train import main
root = Path(sys.argv[1])
build_tiny_dataset(root / "datasets")
main(TrainConfig(dataset=str(root / "datasets" / "dataset.json"), output_dir=str(root / "model"),
                 epochs=2, batch_size=8, workers=0, image_size=32, device="cpu", threads=1,
                 backbone="tiny", pretrained=False, lr=3e-3, print_freq=1))
"""
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")  # tqdm moves between its two bars with these
LOG_LINE = re.compile(r"^\d\d:\d\d:\d\d \[rank 0\] [^|\r\n]+$")  # training's log format
BAR_FRAME = re.compile(r"^(epoch \d/2|training): +\d+%\|[^|]*\| \d+/\d+ "
                       r"\[\d\d:\d\d<(\d\d:\d\d|\?), +[\d.?]+(step|epoch)/s\]$")
STEP_LINE = re.compile(r"epoch (\d)/2 step (\d+)/(\d+) loss")


def _train_child(tmp_path: Path, env: dict[str, str]):
    cmd = [sys.executable, "-c", TRAIN_CHILD, str(tmp_path / "run"), str(PROJECT)]
    return cmd, {**os.environ, "PYTHONPATH": str(PROJECT), **env}


def _step_lines_once(lines: list[str]) -> None:
    """Every step of both epochs logged exactly once and in order, and each epoch's
    validation line once."""
    steps = [STEP_LINE.search(ln).groups() for ln in lines if STEP_LINE.search(ln)]
    per_epoch = int(steps[0][2])
    assert [(e, int(s)) for e, s, _ in steps] == [
        (e, s) for e in "12" for s in range(1, per_epoch + 1)], steps
    for epoch in (1, 2):
        assert sum(f"epoch {epoch}/2 validation top-1" in ln for ln in lines) == 1, lines


def test_log_lines_never_break_a_training_bar(tmp_path):
    cmd, env = _train_child(tmp_path, {"GEOSCOUT_PROGRESS": "auto"})
    out = ANSI.sub("", _run_in_pty(cmd, env))
    segments = [s for s in re.split(r"[\r\n]", out) if s.strip()]
    logs = [s for s in segments if "[rank 0]" in s]
    bars = [s for s in segments if "%|" in s]
    assert logs and bars, out
    broken = [s for s in logs if not LOG_LINE.match(s)] + \
        [s for s in bars if not BAR_FRAME.match(s)]
    assert not broken, broken  # a log line glued to a bar frame (or the reverse) shows here
    _step_lines_once(logs)
    epoch_frames = [s for s in bars if s.startswith("epoch 2/2")]
    total = int(re.search(r"\d+/(\d+) \[", epoch_frames[0]).group(1))
    assert any(f" {total}/{total} [" in f for f in epoch_frames)  # counts to the end
    assert any(ETA.search(f) for f in epoch_frames)
    assert any(s.startswith("training:") and " 2/2 [" in s for s in bars)


def test_training_log_output_is_line_based_without_duplicates(tmp_path):
    cmd, env = _train_child(tmp_path, {"GEOSCOUT_PROGRESS": "auto",
                                       "GEOSCOUT_PROGRESS_EVERY": "0"})
    proc = subprocess.run(cmd, cwd=PROJECT, env=env, capture_output=True, text=True,
                          check=False, timeout=180)
    assert proc.returncode == 0, proc.stderr
    assert "\r" not in proc.stderr and "\x1b[" not in proc.stderr
    lines = proc.stderr.splitlines()
    _step_lines_once([ln for ln in lines if LOG_LINE.match(ln)])
    frames = [ln for ln in lines if ln.startswith("epoch 1/2:")]
    counts = [int(re.search(r"(\d+)/\d+ \[", ln).group(1)) for ln in frames]
    assert counts == sorted(set(counts)) and len(counts) > 1, frames  # each count once
    dupes = sorted({ln for ln in lines if ln.strip() and lines.count(ln) > 1})
    assert not dupes, dupes


WARN_CHILD = """
import logging, time
from geo_assets.progress import track
for i in track(range(12), desc="items", unit="it"):
    time.sleep(0.02)
    if i % 4 == 1:  # no handler configured: logging's last resort prints it to stderr
        logging.getLogger("geoscout.somewhere").warning("item %d looked odd", i)
"""


def test_a_warning_from_unconfigured_logging_is_printed_above_the_bar():
    env = {**os.environ, "PYTHONPATH": str(PROJECT), "GEOSCOUT_PROGRESS": "auto"}
    out = ANSI.sub("", _run_in_pty([sys.executable, "-c", WARN_CHILD], env))
    segments = [s for s in re.split(r"[\r\n]", out) if s.strip()]
    warnings = [s for s in segments if "looked odd" in s]
    assert warnings == [f"item {i} looked odd" for i in (1, 5, 9)], segments
    assert any(s.startswith("items: 100%") and " 12/12 [" in s for s in segments), segments
