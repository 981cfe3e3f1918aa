"""Checkpoints that resume exactly: model, optimizer, scheduler, scaler, counters and every
rank's RNG states. Written to a temporary file in the same folder, then ``os.replace``d, so a
crash never leaves a half-written checkpoint under the real name; the checkpoint before it is
kept (``keep_previous``). :func:`load_resumable` falls back, with a warning, from a truncated,
empty or garbage checkpoint to the previous one, then to ``best.pth`` (weights only), and ends
in a clear :class:`CheckpointError` naming every file and its fault.

Nothing in a checkpoint grows with the dataset: the stream position is the shared
(epoch, step_in_epoch) counter pair (each rank's stream is seeded from the seed, the epoch and
the rank, so it can be replayed), plus one RNG state per rank: O(model + ranks + epochs).
Resuming with another number of processes is refused (``check_world_size``): the per-rank
streams, the RNG states and the steps per epoch (hence the learning-rate schedule) all depend
on it.
"""

from __future__ import annotations

import logging
import os
import random
import tempfile
from pathlib import Path

import numpy as np
import torch

from geo_assets.errors import InputError

FORMAT_VERSION = 2  # 2: no seen image ids (format 1 held every rank's, O(images))
log = logging.getLogger("geoscout.train")
RESUME_KEYS = ("model", "optimizer", "scheduler", "state", "rng", "config_hash",
               "tables_version", "world_size")


class CheckpointError(InputError):
    """No usable checkpoint to resume from."""


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def check_world_size(saved: dict, world_size: int, path) -> None:
    """Refuse a resume on another number of processes, naming what to do instead."""
    was = int(saved.get("world_size", 1))
    if was != world_size:
        raise InputError(
            f"{path} was written by a run of {was} training process(es) and this run has "
            f"{world_size}: the per-process sample streams, RNG states and steps per epoch "
            f"(so the learning-rate schedule) depend on that number, so the resume would not "
            f"be exact. Resume with {was} process(es) (torchrun --nproc_per_node, or the "
            f"training resource's nproc_per_node), or start a new run without --resume.")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def atomic_save(obj, path: Path, previous: Path | None = None) -> None:
    """torch.save to a temporary sibling, fsync, then rename over ``path``; with ``previous``,
    the file it replaces is first kept under that name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        if previous is not None and path.exists():
            os.replace(path, previous)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load(path: Path) -> dict:
    # Checkpoints hold RNG states (numpy arrays, tuples), so they are not weights-only files;
    # only load checkpoints this project wrote.
    return torch.load(path, map_location="cpu", weights_only=False)


def _problem(path: Path, weights_only: bool) -> tuple[dict | None, str | None]:
    """(payload, None) for a usable file, else (None, what is wrong with it)."""
    if not path.is_file():
        return None, "missing"
    if path.stat().st_size == 0:
        return None, "empty"
    try:
        obj = load(path)
    except Exception as exc:  # noqa: BLE001 - truncated zip, garbage pickle, wrong format
        return None, f"unreadable ({type(exc).__name__})"
    if not isinstance(obj, dict):
        return None, f"holds a {type(obj).__name__}, not a checkpoint"
    missing = [k for k in RESUME_KEYS if k not in obj]
    if not weights_only and missing:
        return None, f"not a resumable checkpoint (no {', '.join(missing[:3])})"
    return obj, None


def load_resumable(path: Path, previous: Path | None = None,
                   best: Path | None = None) -> tuple[dict, Path, bool]:
    """(payload, file used, full) from the first usable of ``path``, ``previous`` (full
    checkpoints) and ``best`` (weights only: ``full`` is False and the payload is the state
    dict). Every fallback is logged as a warning."""
    problems = []
    candidates = [(p, False) for p in (path, previous) if p is not None]
    candidates += [(best, True)] if best is not None else []
    for candidate, weights_only in candidates:
        obj, why = _problem(candidate, weights_only)
        if why is None:
            if problems:
                log.warning("resume: %s; falling back to %s%s", "; ".join(problems),
                            candidate, " (weights only: optimizer and counters start afresh)"
                            if weights_only else "")
            return obj, candidate, not weights_only
        problems.append(f"{candidate} is {why}")
    raise CheckpointError(f"no usable checkpoint to resume from: {'; '.join(problems)}. Start a "
                          "new run (another output folder, or without --resume)")
