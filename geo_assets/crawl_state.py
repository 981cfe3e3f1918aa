"""Crawl state per (source, cell): done, stale, failed with a retry time, or pending.

A cell is *done* when its stats file exists (``geo_assets.ingest``); it is *stale* once its
crawl is older than ``max_age_days`` and is then re-crawled with ``force`` (images stored
before are kept). A cell that fails (an outage, an exhausted quota) gets a failure record
(``layout.cell_failure``) with its attempts and the time of its next retry: exponential
backoff from ``retry_base_s`` (``quota_retry_s`` after a quota failure: requests stop for
the day), removed once the cell succeeds. The crawl-cells sensor retries cells whose time has
come; ``geoscout plan --status`` prints the states.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass

from geo_assets import layout
from geo_assets.settings import RecoverySettings
from geo_assets.storage import DataRoot

DONE, STALE, FAILED, RETRY_DUE, PENDING = "done", "stale", "failed", "retry_due", "pending"


@dataclass(frozen=True)
class CellState:
    cell_id: str
    source: str
    state: str
    attempts: int = 0
    next_retry_at: float | None = None
    crawled_at: float | None = None
    error: str = ""


def read_failure(root: DataRoot, source: str, cell_id: str) -> dict | None:
    rel = layout.cell_failure(source, cell_id)
    return json.loads(root.read_bytes(rel)) if root.exists(rel) else None


def record_failure(root: DataRoot, source: str, cell_id: str, error: str, *, quota: bool,
                   settings: RecoverySettings, now: float | None = None,
                   retry_at: float | None = None) -> dict:
    """Note one more failure of the cell and when to retry it (``retry_at`` when the cause
    says, e.g. a daily budget's reset; else the backoff); the record is returned.
    ``error`` must already be redacted (the clients' errors are)."""
    now = time.time() if now is None else now
    attempts = (read_failure(root, source, cell_id) or {}).get("attempts", 0) + 1
    base = settings.quota_retry_s if quota else settings.retry_base_s
    wait = min(settings.retry_max_s, base * 2 ** (attempts - 1))
    if retry_at is not None:
        wait = max(0.0, retry_at - now)
    record = {"cell_id": cell_id, "source": source, "attempts": attempts,
              "kind": "quota" if quota else "transient", "error": error[:300],
              "failed_at": now, "next_retry_at": now + wait}
    root.write_bytes(layout.cell_failure(source, cell_id),
                     json.dumps(record, indent=1, sort_keys=True).encode())
    return record


def clear_failure(root: DataRoot, source: str, cell_id: str) -> None:
    rel = layout.cell_failure(source, cell_id)
    if root.exists(rel):
        root.fs.rm(root.path(rel))


def cell_state(root: DataRoot, source: str, cell_id: str, settings: RecoverySettings,
               now: float | None = None) -> CellState:
    now = time.time() if now is None else now
    failure = read_failure(root, source, cell_id)
    stats_rel = layout.cell_stats(source, cell_id)
    crawled_at = None
    if root.exists(stats_rel):
        stats = json.loads(root.read_bytes(stats_rel))
        crawled_at = stats.get("finished_at") or root.fs.modified(root.path(stats_rel)).timestamp()
    if failure is not None and (crawled_at is None or failure["failed_at"] > crawled_at):
        due = failure["next_retry_at"] <= now
        return CellState(cell_id, source, RETRY_DUE if due else FAILED, failure["attempts"],
                         failure["next_retry_at"], crawled_at, failure.get("error", ""))
    if crawled_at is None:
        return CellState(cell_id, source, PENDING)
    max_age = settings.max_age_days * 86_400
    stale = max_age > 0 and now - crawled_at > max_age
    return CellState(cell_id, source, STALE if stale else DONE, crawled_at=crawled_at)


def crawl_status(root: DataRoot, sources: list[str], cells: list[str],
                 settings: RecoverySettings, now: float | None = None) -> list[CellState]:
    """Every (source, cell) state, sources and cells in the order given."""
    return [cell_state(root, s, c, settings, now) for s in sources for c in cells]


def format_status(states: list[CellState], now: float | None = None, limit: int = 30) -> str:
    """Counts per source and state, then the failed cells with their next retry."""
    now = time.time() if now is None else now
    counts = Counter((s.source, s.state) for s in states)
    lines = [f"{src:10s} " + ", ".join(f"{st} {counts[(src, st)]}" for st in
                                         (DONE, STALE, FAILED, RETRY_DUE, PENDING))
             for src in dict.fromkeys(s.source for s in states)]
    failed = [s for s in states if s.state in (FAILED, RETRY_DUE)]
    for s in failed[:limit]:
        wait = max(0.0, (s.next_retry_at or now) - now)
        lines.append(f"  {s.source} cell {s.cell_id}: {s.attempts} failures, retry in "
                     f"{wait / 60:.0f} min: {s.error}")
    if len(failed) > limit:
        lines.append(f"  ... and {len(failed) - limit} more failed cells")
    return "\n".join(lines)


def due_cells(root: DataRoot, sources: list[str], cells: list[str],
              settings: RecoverySettings, now: float | None = None) -> list[CellState]:
    """Cells of ``cells`` to crawl again now: failed ones whose retry time has come, and,
    with ``max_age_days`` set, stale ones (this reads every cell's stats: a tick's cost grows
    with the cells). One state per cell: the first source's that is due."""
    now = time.time() if now is None else now
    wanted, out = set(cells), {}
    for rel in root.glob(f"{layout.CELLS_DIR}/*/*{layout.CELL_FAILURE_SUFFIX}"):
        source, name = rel.split("/")[-2:]
        cell = name.removesuffix(layout.CELL_FAILURE_SUFFIX)
        if source in sources and cell in wanted and cell not in out:
            state = cell_state(root, source, cell, settings, now)
            if state.state == RETRY_DUE:
                out[cell] = state
    if settings.max_age_days > 0:
        for cell in cells:
            for source in sources:
                state = cell_state(root, source, cell, settings, now)
                if state.state == STALE and cell not in out:
                    out[cell] = state
    return [out[c] for c in cells if c in out]
