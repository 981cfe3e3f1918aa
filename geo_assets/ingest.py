"""The per-cell ingestion pipeline (the merge of cell manifests is ``geo_assets.merge``).

Over the ~450-line guide: the journal, the two-stage download and the cell's outcome rules
share the ``Outcome`` record; the journal is the candidate to move out.

``ingest_cell``: list candidates -> download (thread pool, bounded in flight) -> validate ->
store content-addressed -> filter -> one manifest row per image (kept, or dropped with the
reason) written atomically to ``manifests/cells/<source>/<cell_id>.parquet`` -> then
``<cell_id>.stats.json``, written last: a stats file marks the cell done (img2dataset's
incremental pattern), and a done cell is skipped unless ``force``.

Resume: every image stored is also noted in a per-cell journal
(``<cell_id>.journal.jsonl``, one JSON line per image, flushed after the image file is in
place). A crawl killed mid-cell and run again reads the journal and downloads only what is
missing, so it ends with the same manifest bytes as an uninterrupted run.

Failures: a credential error or an exhausted quota raises at once; a cell whose listing fails
transiently raises ``TransientServiceError`` (retry the cell later, nothing marked done); so
does a cell where more than ``max_fetch_failure_ratio`` of downloads failed. A cell with no
coverage writes an empty manifest whose stats say ``"status": "no_coverage"``.

Retryable outcomes (``manifest.RETRYABLE_REASONS``: failed downloads, and bodies that did not
decode, which a network can cut short or swap) are never journalled nor carried into a later
run: the stats count them (``retryable``), and a later crawl re-opens such a cell even without
``force`` (at most ``retry_rounds`` times) and downloads only those images again. A record
the source could not parse is a row with its reason (``no_location`` / ``invalid_record``),
never a failed cell.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from geo_assets import filters, layout
from geo_assets.cells import check_cell_id, points_to_cells
from geo_assets.clients.base import Candidate, ImageSource, ListRequest
from geo_assets.clients.http import (
    CredentialError,
    QuotaExceededError,
    RefusedTargetError,
    RemoteServiceError,
    TransientServiceError,
)
from geo_assets.clients.redact import PROCESS_REDACTOR
from geo_assets.images import ImageInfo, inspect_image
from geo_assets.manifest import (
    RETRYABLE_REASONS,
    SCHEMA_VERSION,
    DropReason,
    rows_to_table,
    table_to_parquet_bytes,
)
from geo_assets.settings import IngestSettings
from geo_assets.storage import DataRoot, sha256_hex

REFETCH_REASONS = (DropReason.CORRUPT, DropReason.NOT_AN_IMAGE)
Progress = Callable[..., None]  # progress(done, total, stage=..., cell_id=...)


@dataclass(frozen=True)
class CellResult:
    cell_id: str
    source: str
    manifest_relpath: str
    stats_relpath: str
    version: str                        # sha256 of the manifest file
    n_rows: int
    n_kept: int
    drop_reasons: dict[str, int]
    stats: dict
    skipped: bool = False               # already done: read from its stats file

    def summary(self) -> dict:
        return {"cell_id": self.cell_id, "source": self.source, "n_rows": self.n_rows,
                "n_kept": self.n_kept, "drop_reasons": dict(self.drop_reasons),
                "version": self.version, "status": self.stats.get("status"),
                "skipped": self.skipped}

    @classmethod
    def from_stats(cls, stats: dict, skipped: bool = False) -> CellResult:
        return cls(stats["cell_id"], stats["source"], stats["manifest"], stats["stats_file"],
                   stats["version"], stats["n_rows"], stats["n_kept"], stats["drop_reasons"],
                   stats, skipped)


# --- journal --------------------------------------------------------------------------------

class Journal:
    """Append-only JSON lines of per-image outcomes; a torn last line is ignored."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self.entries: dict[str, dict] = {}
        if path is not None and path.exists():
            for line in path.read_text(errors="replace").splitlines():
                try:
                    entry = json.loads(line)
                    self.entries[entry["image_id"]] = entry
                except (ValueError, KeyError, TypeError):
                    continue
        self._file = None

    def append(self, entry: dict) -> None:
        if self.path is None:
            return
        line = json.dumps(entry, sort_keys=True) + "\n"
        with self._lock:
            if self._file is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115
                self._file.write("\n")  # terminate a line torn by a previous crash
            self._file.write(line)
            self._file.flush()

    def remove(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None
            if self.path is not None and self.path.exists():
                self.path.unlink()


# --- download + validate + store --------------------------------------------------------------

@dataclass
class Outcome:
    """What happened to one candidate's bytes; becomes part of its manifest row."""

    sha256: str | None = None
    file_bytes: int | None = None
    width: int | None = None
    height: int | None = None
    brightness: float | None = None
    phash: str | None = None
    drop_reason: str | None = None
    error: str | None = None
    resumed: bool = False

    @classmethod
    def from_info(cls, data: bytes, info: ImageInfo, sha256: str | None) -> Outcome:
        return cls(sha256=sha256, file_bytes=len(data), width=info.width, height=info.height,
                   brightness=info.brightness, phash=info.phash,
                   drop_reason=None if info.ok else str(info.drop_reason), error=info.error)

    def record(self) -> dict:
        """The fields that go into the journal and the manifest row (all but ``resumed``)."""
        return {k: v for k, v in asdict(self).items() if k != "resumed"}


def _download(source: ImageSource, cand: Candidate) -> bytes | Outcome:
    """The network stage: the image's bytes, or a fetch_failed outcome."""
    try:
        return source.fetch(cand)
    except (CredentialError, QuotaExceededError):
        raise
    except RefusedTargetError as exc:  # the record points outside the allow-list: for good
        return Outcome(drop_reason=str(DropReason.INVALID_RECORD),
                       error=PROCESS_REDACTOR(exc)[:300])
    except (RemoteServiceError, OSError) as exc:
        return Outcome(drop_reason=str(DropReason.FETCH_FAILED),
                       error=PROCESS_REDACTOR(exc)[:300])


def _check_and_store(source: ImageSource, cand: Candidate, data: bytes | Outcome,
                     root: DataRoot, settings: IngestSettings) -> Outcome:
    """The CPU stage, off the request path: full decode and checks, then content-addressed
    storage (SHA-256, fsync); a corrupt image is fetched once more first."""
    if isinstance(data, Outcome):
        return data
    info = inspect_image(data, settings.images)
    if settings.refetch_corrupt and info.drop_reason in REFETCH_REASONS:
        again = _download(source, cand)  # a transfer cut short by the network, or a bad file?
        if isinstance(again, bytes) and again != data:
            data, info = again, inspect_image(again, settings.images)
    if not info.ok:
        return Outcome.from_info(data, info, None)
    digest, _ = root.put_image(data, getattr(source, "ext", "jpg"))
    return Outcome.from_info(data, info, digest)


def _resumed(entry: dict | None, root: DataRoot, ext: str) -> Outcome | None:
    """A journal entry whose stored file is still there (or a deterministic rejection)."""
    if entry is None:
        return None
    fields = {k: entry.get(k) for k in Outcome.__dataclass_fields__ if k != "resumed"}
    if entry.get("sha256") and not root.exists(layout.image(entry["sha256"], ext)):
        return None
    return Outcome(**fields, resumed=True)


def download_all(source: ImageSource, cands: list[Candidate], root: DataRoot,
                 journal: Journal, settings: IngestSettings,
                 progress: Progress | None = None, cell_id: str = "") -> dict[str, Outcome]:
    """Fetch, validate and store every candidate not already done, in two stages: up to
    ``max_in_flight`` downloads on ``fetch_threads`` threads (the network is the bottleneck:
    keep requests in flight), and the decode, checks, hashing and storage on ``workers``
    threads, so CPU work never holds a request slot."""
    ext = getattr(source, "ext", "jpg")
    out: dict[str, Outcome] = {}
    todo = []
    for c in cands:
        done = _resumed(journal.entries.get(c.image_id), root, ext)
        if done is not None:
            out[c.image_id] = done
        else:
            todo.append(c)
    total, finished = len(cands), len(out)
    in_flight = max(1, settings.max_in_flight)
    with ThreadPoolExecutor(max(1, min(settings.fetch_threads, in_flight))) as net, \
            ThreadPoolExecutor(max(1, settings.workers)) as cpu:
        pending: dict[Future, tuple[str, Candidate]] = {}
        queue = iter(todo)
        try:
            while True:
                while sum(stage == "net" for stage, _ in pending.values()) < in_flight:
                    c = next(queue, None)
                    if c is None:
                        break
                    pending[net.submit(_download, source, c)] = ("net", c)
                if not pending:
                    break
                ready, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in ready:
                    stage, c = pending.pop(fut)
                    if stage == "net":
                        job = cpu.submit(_check_and_store, source, c, fut.result(), root,
                                         settings)
                        pending[job] = ("cpu", c)
                        continue
                    outcome = fut.result()
                    out[c.image_id] = outcome
                    if outcome.drop_reason not in RETRYABLE_REASONS:  # re-fetched on resume
                        journal.append({"image_id": c.image_id, **outcome.record()})
                    finished += 1
                    if progress is not None:
                        progress(finished, total, stage="download", cell_id=cell_id)
        except BaseException:
            for fut in pending:
                fut.cancel()
            raise
    return out


# --- rows and filters ---------------------------------------------------------------------

def base_row(c: Candidate, cell_id: str) -> dict:
    return {
        "image_id": c.image_id, "source": c.source, "source_id": c.source_id,
        "group_id": c.group_id, "creator": c.creator, "lat_deg": c.lat_deg,
        "lon_deg": c.lon_deg, "captured_at": c.captured_at_ms, "heading_deg": c.heading_deg,
        "is_pano": c.is_pano, "cell_id": cell_id, "license": c.license,
        "attribution": c.attribution, "kept": False, "drop_reason": None, "error": None,
    }


def priority_order(rows: list[dict]) -> list[int]:
    """Earlier capture first (unknown dates last), then image id: the filters' tie-break."""
    return sorted(range(len(rows)), key=lambda i: (rows[i]["captured_at"] is None,
                                                   rows[i]["captured_at"] or 0,
                                                   rows[i]["image_id"]))


def apply_filters(rows: list[dict], fs: filters.FilterSettings) -> None:
    """Set ``kept``/``drop_reason`` on rows whose image was stored; deterministic."""
    order = priority_order(rows)
    r = [rows[i] for i in order]
    alive = np.array([x["drop_reason"] is None and x["sha256"] is not None for x in r], bool)

    def drop(mask: np.ndarray, reason: DropReason) -> None:
        for i in np.flatnonzero(mask & alive):
            r[i]["drop_reason"] = str(reason)
        alive[mask] = False

    bright = filters.brightness_reasons(
        np.array([x["brightness"] if x["brightness"] is not None else -1.0 for x in r]), fs)
    drop(alive & (bright == "too_dark"), DropReason.TOO_DARK)
    drop(alive & (bright == "too_bright"), DropReason.TOO_BRIGHT)
    sha = [x["sha256"] for x in r]
    drop(filters.duplicate_content(sha, alive), DropReason.DUPLICATE_CONTENT)
    lat = np.array([x["lat_deg"] for x in r], dtype=np.float64)
    lon = np.array([x["lon_deg"] for x in r], dtype=np.float64)
    group = [x["group_id"] for x in r]
    drop(filters.spatial_dedup(lat, lon, group, alive.copy(), fs.min_distance_m),
         DropReason.DUPLICATE_LOCATION)
    captured = np.array([x["captured_at"] or 0 for x in r], dtype=np.int64)
    sources = [str(x.get("source", "")) for x in r]
    for source in sorted(set(sources)):  # the cap is per source (local photo groups: off)
        k = fs.group_cap(source)
        mine = alive & np.array([s == source for s in sources], bool)
        drop(filters.sequence_cap(group, captured, mine, k), DropReason.SEQUENCE_CAP)
    units = filters.location_units(lat, lon, group)
    drop(filters.near_duplicates([x["phash"] for x in r], alive.copy(), fs.phash_max_distance,
                                 units), DropReason.NEAR_DUPLICATE)
    for i in np.flatnonzero(alive):
        r[i]["kept"] = True


def build_rows(cands: list[Candidate], outcomes: dict[str, Outcome], cell_id: str,
               fs: filters.FilterSettings) -> list[dict]:
    """One row per candidate: its outcome; a rejected record with its own reason; anything
    else lies outside the cell. Every error text is redacted before it is stored."""
    rows = []
    for c in cands:
        row = base_row(c, cell_id)
        o = outcomes.get(c.image_id)
        if o is None:
            located = np.isfinite(c.lat_deg) and np.isfinite(c.lon_deg)
            reason = (c.drop_reason if c.drop_reason and not located
                      else c.drop_reason if c.drop_reason and _in_cell([c], cell_id)[0]
                      else str(DropReason.OUT_OF_CELL))
            row.update(drop_reason=reason, error=c.error, sha256=None, file_bytes=None,
                       width=None, height=None, brightness=None, phash=None)
        else:
            row.update(o.record())
        if row["error"] is not None:
            row["error"] = PROCESS_REDACTOR(row["error"])[:500]
        rows.append(row)
    apply_filters(rows, fs)
    return rows


# --- the cell -----------------------------------------------------------------------------

def _in_cell(cands: list[Candidate], cell_id: str) -> np.ndarray:
    if not cands:
        return np.zeros(0, dtype=bool)
    lat = np.array([c.lat_deg for c in cands])
    lon = np.array([c.lon_deg for c in cands])
    return points_to_cells(lat, lon, len(cell_id)) == cell_id


# rejections that the same bytes always get: carried into a forced re-crawl (the retryable
# ones, ``manifest.RETRYABLE_REASONS``, are fetched again)
VALIDATION_REASONS = {str(r) for r in (DropReason.DECOMPRESSION_BOMB, DropReason.TOO_SMALL)}


def previous_outcomes(root: DataRoot, manifest_rel: str) -> dict[str, dict]:
    """Per-image outcomes recorded by an earlier complete run of the cell (for ``force``
    re-crawls): stored images and validation rejections need no new download."""
    if not root.exists(manifest_rel):
        return {}
    with root.parquet_file(manifest_rel) as parquet:
        rows = parquet.read().to_pylist()
    out = {}
    for row in rows:
        stored = row["sha256"] is not None
        if stored or row["drop_reason"] in VALIDATION_REASONS:
            entry = {k: row.get(k) for k in Outcome.__dataclass_fields__ if k != "resumed"}
            entry["drop_reason"] = None if stored else row["drop_reason"]
            entry["error"] = None if stored else row["error"]
            out[row["image_id"]] = entry
    return out


def earlier_rows(root: DataRoot, manifest_rel: str, listed: set[str]) -> list[dict]:
    """Rows of an earlier crawl of the cell that this (forced) crawl did not list again:
    a re-crawl adds new images and keeps the ones stored before."""
    if not root.exists(manifest_rel):
        return []
    with root.parquet_file(manifest_rel) as parquet:
        rows = parquet.read().to_pylist()
    return [r for r in rows if r["image_id"] not in listed]


def _journal_path(root: DataRoot, source: str, cell_id: str) -> Path | None:
    if not root.is_local:
        return None
    return root.local_path(layout.cell_journal(source, cell_id))


def _counters(source) -> Counter:
    get = getattr(source, "http_counters", None)
    return Counter(get()) if callable(get) else Counter()


def list_unique(source: ImageSource, request: ListRequest) -> list[Candidate]:
    seen: dict[str, Candidate] = {}
    for c in source.list_candidates(request):
        seen.setdefault(c.image_id, c)
    return [seen[k] for k in sorted(seen)]


def ingest_cell(source: ImageSource, cell_id: str, root: DataRoot, settings: IngestSettings,
                progress: Progress | None = None, *, land=None) -> CellResult:
    """Crawl one cell of one source into its manifest; see the module docstring."""
    check_cell_id(cell_id)
    name = str(source.name)
    stats_rel = layout.cell_stats(name, cell_id)
    if not settings.force and root.exists(stats_rel):
        done = json.loads(root.read_bytes(stats_rel))
        retry_round = done.get("retry_round", 0) + 1
        if not done.get("retryable") or retry_round > settings.retry_rounds:
            return CellResult.from_stats(done, skipped=True)
        # a done cell with retryable drops: crawl it again, fetching only those images
        settings = dataclasses.replace(settings, force=True)
    else:
        retry_round = 0
    source.preflight()
    t0, before = time.monotonic(), _counters(source)
    cands = list_unique(source, ListRequest(cell_id, settings.target_per_cell, settings.seed,
                                            land))
    t_list = time.monotonic()
    if progress is not None:
        progress(0, len(cands), stage="listed", cell_id=cell_id)
    journal = Journal(_journal_path(root, name, cell_id))
    manifest_rel = layout.cell_manifest(name, cell_id)
    journal.entries = {**previous_outcomes(root, manifest_rel), **journal.entries}
    valid = [c for c in cands if c.drop_reason is None]
    inside = [c for c, ok in zip(valid, _in_cell(valid, cell_id)) if ok]
    outcomes = download_all(source, inside, root, journal, settings, progress, cell_id)
    t_fetch = time.monotonic()
    _check_failures(outcomes, settings, name, cell_id)
    rows = build_rows(cands, outcomes, cell_id, settings.filters_for(name))
    rows += earlier_rows(root, manifest_rel, {c.image_id for c in cands}) if settings.force \
        else []
    data = table_to_parquet_bytes(rows_to_table(rows))
    root.write_bytes(manifest_rel, data)
    timings = {"list_s": t_list - t0, "fetch_s": t_fetch - t_list,
               "total_s": time.monotonic() - t0}
    stats = _stats(source, cell_id, rows, outcomes, sha256_hex(data), manifest_rel, stats_rel,
                   timings, _counters(source) - before)
    stats["retry_round"] = retry_round
    stats["filters"] = asdict(settings.filters_for(name))  # what decided the drops
    stats["images"] = asdict(settings.images)
    root.write_bytes(stats_rel, json.dumps(stats, indent=1, sort_keys=True).encode())
    journal.remove()
    if progress is not None:
        progress(len(cands), len(cands), stage="done", cell_id=cell_id)
    return CellResult.from_stats(stats)


def _check_failures(outcomes: dict[str, Outcome], settings: IngestSettings, source: str,
                    cell_id: str) -> None:
    failed = sum(o.drop_reason == DropReason.FETCH_FAILED for o in outcomes.values())
    if outcomes and failed / len(outcomes) > settings.max_fetch_failure_ratio:
        raise TransientServiceError(
            f"{source} cell {cell_id}: {failed} of {len(outcomes)} downloads failed; the cell "
            "is not marked done and will download only the missing images when retried")


def _stats(source, cell_id, rows, outcomes, version, manifest_rel, stats_rel, timings,
           http: Counter) -> dict:
    reasons = Counter(r["drop_reason"] for r in rows if not r["kept"])
    fresh = [o for o in outcomes.values() if not o.resumed and o.file_bytes]
    n_kept = sum(r["kept"] for r in rows)
    return {
        "cell_id": cell_id, "source": str(source.name), "schema_version": SCHEMA_VERSION,
        "finished_at": round(time.time(), 3),
        "status": "ok" if rows else "no_coverage",
        "message": "" if rows else f"no {source.name} imagery found in cell {cell_id}",
        "manifest": manifest_rel, "stats_file": stats_rel, "version": version,
        "n_rows": len(rows), "n_kept": n_kept, "n_dropped": len(rows) - n_kept,
        "retryable": sum(reasons.get(r, 0) for r in RETRYABLE_REASONS),
        "drop_reasons": dict(sorted(reasons.items())),
        "downloaded": len(fresh), "resumed": sum(o.resumed for o in outcomes.values()),
        "bytes_downloaded": sum(o.file_bytes for o in fresh),
        "listing": getattr(source, "last_listing", {}), "http": dict(sorted(http.items())),
        "seconds": {k: round(v, 3) for k, v in timings.items()},
        "images_per_s": round(len(outcomes) / timings["total_s"], 2)
        if timings["total_s"] > 0 else 0.0,
    }
