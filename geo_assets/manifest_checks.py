"""Checks on an image manifest, as plain functions that return findings.

Used by the Dagster asset checks next to ``image_manifest`` (pipeline/assets/ingest.py) and
usable on their own. Each returns a :class:`Finding`: whether the check passed, a count of
offending rows, and a few examples (never a secret: examples of leaked secrets are redacted).
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from geo_assets import layout
from geo_assets.cells import points_to_cells
from geo_assets.clients.redact import Redactor
from geo_assets.manifest import DropReason
from geo_assets.storage import DataRoot

# rows whose coordinates are known to be unusable are not held to their cell
_NO_CELL_REASONS = (DropReason.OUT_OF_CELL.value, DropReason.NO_LOCATION.value,
                    DropReason.INVALID_RECORD.value)  # unparsable records: maybe unplaced


@dataclass(frozen=True)
class Finding:
    passed: bool
    n_checked: int
    n_failed: int
    examples: list[str] = field(default_factory=list)

    def metadata(self) -> dict[str, object]:
        return {"checked": self.n_checked, "failed": self.n_failed,
                "examples": "\n".join(self.examples) or "-"}


def duplicate_image_ids(manifest: pl.DataFrame, max_examples: int = 5) -> Finding:
    dup = (manifest.group_by("image_id").len().filter(pl.col("len") > 1)
           .sort("image_id").head(max_examples))
    n_failed = manifest.height - manifest["image_id"].n_unique()
    return Finding(n_failed == 0, manifest.height, n_failed,
                   [f"{r['image_id']} x{r['len']}" for r in dup.iter_rows(named=True)])


CELL_CHECK_COLUMNS = ["image_id", "lat_deg", "lon_deg", "cell_id", "drop_reason"]


def coordinates_outside_cells(manifest: pl.DataFrame, max_examples: int = 5) -> Finding:
    """Rows (other than those dropped for their location) whose lat/lon lie outside cell_id."""
    rows = manifest.filter(~pl.col("drop_reason").is_in(_NO_CELL_REASONS)
                           | pl.col("drop_reason").is_null())
    bad_idx: list[int] = []
    levels = rows["cell_id"].str.len_chars()
    for level in levels.unique().to_list():
        part = rows.with_row_index("_i").filter(levels == level)
        got = points_to_cells(part["lat_deg"].to_numpy(), part["lon_deg"].to_numpy(), int(level))
        wrong = np.asarray(got, dtype=object) != part["cell_id"].to_numpy()
        bad_idx.extend(part["_i"].to_numpy()[wrong].tolist())
    bad = rows[sorted(bad_idx)].head(max_examples) if bad_idx else rows.clear()
    return Finding(not bad_idx, rows.height, len(bad_idx),
                   [f"{r['image_id']} at ({r['lat_deg']:.5f}, {r['lon_deg']:.5f}) "
                    f"not in cell {r['cell_id']}" for r in bad.iter_rows(named=True)])


def _decode_error(root: DataRoot, sha256: str | None) -> str | None:
    from PIL import Image

    if not sha256:
        return "kept without a file hash"
    rel = layout.image(sha256)
    try:
        data = root.read_bytes(rel)
    except FileNotFoundError:
        return f"missing file {rel}"
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
    except Exception as exc:  # noqa: BLE001 - any decoder error means the file is bad
        return f"{rel} does not decode: {type(exc).__name__}"
    return None


def kept_files_bad(manifest: pl.DataFrame, root: DataRoot, workers: int = 4,
                   max_examples: int = 5, sample: int | None = None,
                   seed: int = 0) -> Finding:
    """Every kept row's content-addressed file exists under ``root`` and fully decodes.

    ``sample``: decode only a seeded random sample of that many files (every file was
    decoded once at ingest; this re-check is a spot check that the store still holds them,
    and a full decode of millions of images on every merge costs hours)."""
    kept = manifest.lazy().filter(pl.col("kept")).select(pl.col("sha256").unique()).collect()
    if sample is not None and kept.height > sample:
        kept = kept.sort("sha256").sample(sample, seed=seed)
    shas = kept["sha256"].to_list()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        errors = [e for e in pool.map(lambda s: _decode_error(root, s), shas) if e]
    return Finding(not errors, len(shas), len(errors), sorted(errors)[:max_examples])


def leaked_secrets(texts: Iterable[tuple[str, str]], secrets: Iterable[str | None] = (),
                   max_examples: int = 5) -> Finding:
    """Texts (``(where, text)`` pairs) that hold a known secret, a token/key/signature
    parameter, an authorization header or a signed CDN URL. Examples name where, not what."""
    redactor = Redactor()
    redactor.add(*secrets)
    n = 0
    where_bad: list[str] = []
    for where, text in texts:
        n += 1
        if text and redactor(text) != text:
            where_bad.append(where)
    return Finding(not where_bad, n, len(where_bad), where_bad[:max_examples])


def _secret_pattern() -> str:
    """The redactor's token-parameter and authorization-header patterns as one
    case-insensitive regex for polars (a prefilter: the Redactor judges what it finds)."""
    from geo_assets.clients import redact

    parts = [p.pattern.removeprefix("(?i)") for p in (redact._SECRET_PARAM_RE,
                                                      redact._AUTH_HEADER_RE)]
    return "(?i)" + "|".join(f"(?:{p})" for p in parts)


def suspicious_texts(manifest: pl.DataFrame | pl.LazyFrame,
                     secrets: Iterable[str | None] = ()) -> tuple[int, list[tuple[str, str]]]:
    """(distinct string values checked, the values that may hold a secret), labelled by
    column. Vectorised: one polars regex match per column (the redactor's patterns) and a
    literal match of the known secrets; only the hits go on to ``leaked_secrets``, which
    applies the exact Redactor, so the verdict is the same as checking every value."""
    literals = [s for s in secrets if s and len(s) >= 4]
    pattern = _secret_pattern()
    checked, hits = 0, []
    lazy = manifest.lazy()  # a LazyFrame (a Parquet scan) reads one column at a time
    for name, dtype in lazy.collect_schema().items():
        if dtype != pl.String:
            continue
        values = lazy.select(pl.col(name).drop_nulls().unique()).collect()[name]
        checked += values.len()
        flag = values.str.contains(pattern)
        if literals:
            flag = flag | values.str.contains_any(literals)
        hits.extend((f"manifest column {name}", v) for v in values.filter(flag).to_list())
    return checked, hits


def manifest_texts(manifest: pl.DataFrame) -> Iterable[tuple[str, str]]:
    """Every distinct non-null string value in the manifest, labelled by column."""
    for name, dtype in manifest.schema.items():
        if dtype == pl.String:
            for value in manifest[name].drop_nulls().unique().to_list():
                yield f"manifest column {name}", value


def json_texts(label: str, obj: object) -> Iterable[tuple[str, str]]:
    yield label, json.dumps(obj, default=str, sort_keys=True)
