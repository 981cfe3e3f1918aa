"""Strict parsing of external records (API entities, sidecar rows, EXIF tags) into typed values.

Every source turns each record it reads into a :class:`Candidate`: a usable one, or a
*rejected* one that carries a drop reason and an error naming the bad field. A rejected
candidate becomes a manifest row like any other, so one bad record never aborts a cell and
never vanishes. The helpers below raise :class:`RecordError` with the field's name; nothing
else (``ValueError``, ``TypeError``, ``OverflowError``) escapes them.
"""

from __future__ import annotations

import hashlib
import json
import math
import re

from geo_assets.clients.base import Candidate
from geo_assets.manifest import DropReason

# ids become file names, URL path segments and WebDataset keys: keep them plain
SOURCE_ID_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
MIN_EPOCH_MS, MAX_EPOCH_MS = 0, 4_102_444_800_000  # 1970 .. 2100
MAX_TEXT = 500
MAX_LINK = 4096  # signed CDN links run to several hundred characters


def show(value: object) -> str:
    """A field's value for an error text: secrets redacted first, then shortened (a cut
    secret would escape the redactor)."""
    from geo_assets.clients.redact import PROCESS_REDACTOR

    return repr(PROCESS_REDACTOR(str(value))[:40])


class RecordError(ValueError):
    """One field of an external record is unusable; ``location`` says it was a coordinate."""

    def __init__(self, message: str, *, location: bool = False) -> None:
        super().__init__(message)
        self.location = location


def _number(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise RecordError(f"{name} is {type(value).__name__}, not a number")
    try:
        return float(value)
    except (ValueError, OverflowError):
        raise RecordError(f"{name} {show(value)} is not a number") from None


def coordinate(value: object, name: str, limit: float) -> float:
    """A finite latitude (limit 90) or longitude (limit 180)."""
    try:
        x = _number(value, name)
    except RecordError as exc:
        raise RecordError(str(exc), location=True) from None
    if not math.isfinite(x) or abs(x) > limit:
        raise RecordError(f"{name} {x!r} is not a finite value within +-{limit:g}", location=True)
    return x


def optional_float(value: object, name: str) -> float | None:
    if value is None:
        return None
    x = _number(value, name)
    if not math.isfinite(x):
        raise RecordError(f"{name} {x!r} is not finite")
    return x


def optional_text(value: object, name: str) -> str | None:
    """A string field; numbers are accepted (ids often come as numbers), objects are not."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise RecordError(f"{name} is {type(value).__name__}, not text")
    from geo_assets.clients.redact import PROCESS_REDACTOR

    return PROCESS_REDACTOR(str(value))[:MAX_TEXT]  # a server may echo a secret into data


def optional_link(value: object, name: str) -> str | None:
    """A signed http(s) link to fetch, kept whole: unlike text fields it is neither redacted
    (its signature is what makes it work) nor cut. It stays in memory only (``fetch_ref`` is
    left out of reprs and manifests); the host is checked against the allow-list on fetch."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise RecordError(f"{name} is {type(value).__name__}, not a link")
    if len(value) > MAX_LINK or not value.startswith(("https://", "http://")):
        raise RecordError(f"{name} {show(value)} refused: not an http(s) link of at most "
                          f"{MAX_LINK} characters")
    return value


def optional_bool(value: object, name: str) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    raise RecordError(f"{name} is {type(value).__name__}, not true/false")


def epoch_ms(value: object, name: str) -> int | None:
    """Epoch milliseconds between 1970 and 2100."""
    if value is None:
        return None
    x = _number(value, name)
    if not math.isfinite(x) or not MIN_EPOCH_MS <= x <= MAX_EPOCH_MS:
        raise RecordError(f"{name} {show(value)} is not a time in epoch milliseconds "
                          "(1970..2100)")
    return int(x)


def source_id(value: object, name: str = "id") -> str:
    text = optional_text(value, name)
    if text is None or not SOURCE_ID_RE.match(text):
        raise RecordError(f"{name} {show(value)} is missing or not a plain id "
                          "(letters, digits, _ . : -)")
    return text


def record_digest(record: object) -> str:
    """A stable short id for a record whose own id is unusable."""
    text = json.dumps(record, sort_keys=True, default=repr)
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def rejected(source: str, sid: str, error: str, *, location: bool,
             lat: float = math.nan, lon: float = math.nan, **fields) -> Candidate:
    """A candidate that is recorded (with ``no_location`` or ``invalid_record``) but never
    fetched. Unusable coordinates are stored as NaN."""
    reason = DropReason.NO_LOCATION if location else DropReason.INVALID_RECORD
    return Candidate(image_id=f"{source}:{sid}", source=source, source_id=sid, lat_deg=lat,
                     lon_deg=lon, drop_reason=str(reason), error=error[:MAX_TEXT], **fields)


def safe_coordinates(lat: object, lon: object) -> tuple[float, float]:
    """Coordinates to store for a rejected record: the values when finite and in range."""
    try:
        return coordinate(lat, "lat", 90), coordinate(lon, "lon", 180)
    except RecordError:
        return math.nan, math.nan
