"""Local photos as an image source: EXIF GPS, or a CSV/Parquet sidecar.

A sidecar has one row per photo with columns ``file`` (or ``filename``/``path``, relative to
the folder), ``lat``, ``lon`` and optionally ``group`` (photographer, place), ``license``,
``attribution``/``creator``, ``heading``. Without a ``group`` column, photos at the same
coordinates form one group (e.g. the four headings of one place). Without a sidecar, every
JPEG/PNG under the folder with EXIF GPS tags is used, grouped by its sub-folder.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import polars as pl
from PIL import Image

from geo_assets.cells import check_cell_id, points_to_cells
from geo_assets.clients.base import Candidate, ListRequest
from geo_assets.clients.records import (
    RecordError,
    coordinate,
    optional_float,
    optional_text,
    safe_coordinates,
)
from geo_assets.errors import InputError
from geo_assets.manifest import DropReason, Source

GPS_IFD = 0x8825
EXIF_IFD = 0x8769
DATETIME_ORIGINAL = 0x9003
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp"}
FILE_COLUMNS = ("file", "filename", "path")
MAX_FILE_BYTES = 512 * 1024 * 1024  # a photo larger than this is refused before reading it


@dataclass(frozen=True)
class LocalPhoto:
    relpath: str
    lat: float
    lon: float
    group: str | None = None
    captured_at_ms: int | None = None
    heading: float | None = None
    license: str | None = None
    attribution: str | None = None
    drop_reason: str | None = None      # a rejected row: recorded with this reason
    error: str | None = None


def _dms(values, ref) -> float | None:
    try:
        d, m, s = (float(v) for v in values)
    except (TypeError, ValueError, ZeroDivisionError, OverflowError):
        return None
    sign = -1.0 if str(ref).upper() in ("S", "W") else 1.0
    return sign * (d + m / 60.0 + s / 3600.0)


def exif_location(path: Path) -> tuple[float, float, int | None] | None:
    """(lat, lon, captured_at_ms) from a photo's EXIF GPS tags, or None."""
    try:
        with Image.open(path) as img:
            exif = img.getexif()
            gps = exif.get_ifd(GPS_IFD)
            taken = exif.get_ifd(EXIF_IFD).get(DATETIME_ORIGINAL)
    except Exception:  # noqa: BLE001 - an unreadable file simply has no location
        return None
    if not gps or 2 not in gps or 4 not in gps:
        return None
    lat, lon = _dms(gps[2], gps.get(1, "N")), _dms(gps[4], gps.get(3, "E"))
    try:  # a rational such as 50/0 gives NaN or infinity: no usable location
        lat, lon = coordinate(lat, "GPS latitude", 90), coordinate(lon, "GPS longitude", 180)
    except RecordError:
        return None
    captured = None
    try:
        when = dt.datetime.strptime(str(taken), "%Y:%m:%d %H:%M:%S").replace(tzinfo=dt.UTC)
        captured = int(when.timestamp() * 1000)
    except ValueError:
        pass
    return lat, lon, captured


def _read_sidecar(path: Path) -> pl.DataFrame:
    """The sidecar with every column as text (each row is parsed strictly afterwards)."""
    suffix = path.suffix.lower()
    if suffix not in (".parquet", ".csv", ".txt"):
        raise InputError(f"sidecar {path} must be a .csv or .parquet file")
    try:
        if suffix == ".parquet":
            df = pl.read_parquet(path)
            return df.with_columns(pl.all().cast(pl.String, strict=False))
        return pl.read_csv(path, infer_schema=False, truncate_ragged_lines=False)
    except (pl.exceptions.PolarsError, OSError, ValueError) as exc:
        raise InputError(f"sidecar {path} is not a readable table ({type(exc).__name__}: "
                         f"{str(exc)[:200]}); write a comma-separated CSV with a header row "
                         "file,lat,lon or a Parquet file") from None


def _col(df: pl.DataFrame, *names: str) -> str | None:
    return next((n for n in names if n in df.columns), None)


def _sidecar_photo(row: dict, cols: dict, where: str) -> LocalPhoto:
    """One sidecar row -> a photo, or a rejected photo whose error names file and row."""
    rel = row[cols["file"]]
    if not rel:
        return LocalPhoto(relpath=f"{where}:no-file", lat=math.nan, lon=math.nan,
                          drop_reason=str(DropReason.INVALID_RECORD),
                          error=f"{where}: empty file name")
    try:
        lat = coordinate(row["lat"], "lat", 90)
        lon = coordinate(row["lon"], "lon", 180)
        group = optional_text(row[cols["group"]], "group") if cols["group"] else None
        heading = optional_float(row[cols["heading"]], "heading") if cols["heading"] else None
    except RecordError as exc:
        lat, lon = safe_coordinates(row["lat"], row["lon"])
        reason = DropReason.NO_LOCATION if exc.location else DropReason.INVALID_RECORD
        return LocalPhoto(relpath=str(rel), lat=lat, lon=lon, drop_reason=str(reason),
                          error=f"{where} ({rel}): {exc}")
    return LocalPhoto(
        relpath=str(rel), lat=lat, lon=lon,
        group=group if cols["group"] else f"{lat:.7f},{lon:.7f}",
        heading=heading % 360.0 if heading is not None else None,
        license=row[cols["license"]] if cols["license"] else None,
        attribution=row[cols["attribution"]] if cols["attribution"] else None)


def photos_from_sidecar(folder: Path, sidecar: Path) -> list[LocalPhoto]:
    """Every sidecar row as a photo; bad rows are rejected photos naming file and row, and a
    file listed twice keeps only its first row."""
    df = _read_sidecar(sidecar)
    file_col = _col(df, *FILE_COLUMNS)
    if file_col is None or "lat" not in df.columns or "lon" not in df.columns:
        raise InputError(f"sidecar {sidecar} needs columns file (or filename/path), lat, lon; "
                         f"it has {df.columns}")
    cols = {"file": file_col, "group": _col(df, "group", "group_id"),
            "heading": _col(df, "heading", "heading_deg"),
            "license": _col(df, "license", "licence"),
            "attribution": _col(df, "attribution", "creator")}
    photos, first_row = [], {}
    for i, row in enumerate(df.iter_rows(named=True)):
        where = f"sidecar {sidecar.name} row {i + 2}"  # row 1 is the header
        p = _sidecar_photo(row, cols, where)
        if p.drop_reason is None and p.relpath in first_row:
            p = replace(p, relpath=f"{p.relpath}#row{i + 2}",
                        drop_reason=str(DropReason.INVALID_RECORD),
                        error=f"{where}: {p.relpath} is listed again (first at row "
                              f"{first_row[p.relpath]}); only the first row is used")
        first_row.setdefault(p.relpath, i + 2)
        photos.append(p)
    return photos


def image_files(folder: Path) -> list[Path]:
    """Every image file under ``folder`` (by suffix), sorted."""
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


def photos_from_exif(folder: Path) -> list[LocalPhoto]:
    """Every image file under ``folder``; one without EXIF GPS is a rejected photo
    (``no_location``), recorded, never skipped."""
    photos = []
    for path in image_files(folder):
        found = exif_location(path)
        rel = path.relative_to(folder).as_posix()
        group = path.parent.relative_to(folder).as_posix() or "."
        if found is None:
            photos.append(LocalPhoto(relpath=rel, lat=math.nan, lon=math.nan, group=group,
                                     drop_reason=str(DropReason.NO_LOCATION),
                                     error=f"{rel}: no EXIF GPS location"))
            continue
        photos.append(LocalPhoto(relpath=rel, lat=found[0], lon=found[1], group=group,
                                 captured_at_ms=found[2]))
    return photos


class LocalFolderSource:
    """Photos in a folder, assigned to crawl cells by their coordinates."""

    name = str(Source.LOCAL)
    ext = "jpg"

    def __init__(self, folder: str | Path, sidecar: str | Path | None = None, *,
                 license: str | None = None, attribution: str | None = None) -> None:
        self.folder = Path(folder)
        self.sidecar = Path(sidecar) if sidecar else None
        self.default_license, self.default_attribution = license, attribution
        self._photos: list[LocalPhoto] | None = None
        self._unlisted: list[str] | None = None
        self._version: str | None = None
        self._cells: dict[int, np.ndarray] = {}
        self.last_listing: dict = {}

    def preflight(self) -> None:
        if not self.folder.is_dir():
            raise InputError(f"local image folder {self.folder} does not exist")
        if self.sidecar is not None and not self.sidecar.is_file():
            raise InputError(f"sidecar file {self.sidecar} does not exist")

    @property
    def photos(self) -> list[LocalPhoto]:
        if self._photos is None:
            self._photos = (photos_from_sidecar(self.folder, self.sidecar) if self.sidecar
                            else photos_from_exif(self.folder))
        return self._photos

    def folder_version(self) -> str:
        """SHA-256 over what decides the photos: the folder, the sidecar's bytes, every image
        file's path, size and modification time, and the defaults; a stat walk, no image is
        opened; computed once per source object (one run)."""
        if self._version is None:
            self._version = self._folder_version()
        return self._version

    def use_photos(self, photos: list[LocalPhoto]) -> None:
        """Photos parsed before (the folder index of an unchanged folder)."""
        self._photos, self._cells = list(photos), {}

    def _folder_version(self) -> str:
        h = hashlib.sha256(f"{self.folder.resolve()}\0{self.default_license}\0"
                           f"{self.default_attribution}\n".encode())
        if self.sidecar is not None:
            with open(self.sidecar, "rb") as f:  # and the files: unlisted ones are rows
                h.update(hashlib.file_digest(f, "sha256").digest())
        for path in image_files(self.folder):
            st = path.stat()
            h.update(f"{path.relative_to(self.folder).as_posix()}\0{st.st_size}\0"
                     f"{st.st_mtime_ns}\n".encode())
        return h.hexdigest()

    def unlisted_files(self) -> list[str]:
        """Image files under the folder that no sidecar row names (none without a sidecar:
        every file is then a photo, with or without a location)."""
        if self._unlisted is None:
            files = [] if self.sidecar is None else [
                p.relative_to(self.folder).as_posix() for p in image_files(self.folder)]
            listed = {p.relpath.removeprefix("./") for p in self.photos} if files else set()
            self._unlisted = [rel for rel in files if rel not in listed]
        return self._unlisted

    def unlisted_photo(self, relpath: str) -> LocalPhoto:
        """An image file that no sidecar row names, as a rejected photo."""
        return LocalPhoto(relpath=relpath, lat=math.nan, lon=math.nan,
                          drop_reason=str(DropReason.NO_LOCATION),
                          error=f"{relpath}: no row in sidecar {self.sidecar.name}")

    def locations(self) -> tuple[np.ndarray, np.ndarray]:
        """(lat, lon) of every photo, NaN where it has no usable location."""
        lat = np.array([p.lat for p in self.photos], dtype=np.float64)
        lon = np.array([p.lon for p in self.photos], dtype=np.float64)
        return lat, lon

    def cells_at(self, level: int) -> np.ndarray:
        """The level-``level`` cell of every photo (cached)."""
        if level not in self._cells:
            lat, lon = self.locations()
            ok = np.isfinite(lat) & np.isfinite(lon)  # unplaced rows belong to no cell
            cells = np.full(len(lat), "", dtype=object)
            cells[ok] = points_to_cells(lat[ok], lon[ok], level)
            self._cells[level] = cells
        return self._cells[level]

    def list_candidates(self, request: ListRequest) -> list[Candidate]:
        """The cell's photos; rows without usable coordinates belong to no cell and are
        counted (with examples naming file and row) in ``last_listing`` instead."""
        cell_id = check_cell_id(request.cell_id)
        idx = np.flatnonzero(self.cells_at(len(cell_id)) == cell_id)
        unplaced = [p for p in self.photos if not (math.isfinite(p.lat) and math.isfinite(p.lon))]
        self.last_listing = {"coverage": "folder", "photos_in_folder": len(self.photos),
                             "records_without_location": len(unplaced),
                             "examples_without_location": [p.error for p in unplaced[:5]]}
        cands = [self.candidate(self.photos[i]) for i in idx]
        return sorted(cands, key=lambda c: c.image_id)

    def candidate(self, p: LocalPhoto, check_file: bool = True) -> Candidate:
        """The photo as a candidate; ``check_file``: a path outside the folder or naming no
        file is a rejected candidate (the folder part, which never reads files, skips it)."""
        reason, error, path = p.drop_reason, p.error, None
        if reason is None and check_file:
            path, reason, error = confined(self.folder, p.relpath)
        return Candidate(
            image_id=f"{Source.LOCAL}:{p.relpath}", source=str(Source.LOCAL),
            source_id=p.relpath, lat_deg=p.lat, lon_deg=p.lon, group_id=p.group,
            captured_at_ms=p.captured_at_ms, heading_deg=p.heading,
            license=p.license or self.default_license,
            attribution=p.attribution or self.default_attribution,
            fetch_ref=path, drop_reason=reason, error=error)

    def fetch(self, candidate: Candidate) -> bytes:
        path, _, error = confined(self.folder, candidate.source_id)  # checked again
        if path is None:
            raise OSError(error)
        with open(path, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
        if len(data) > MAX_FILE_BYTES:
            raise OSError(f"{candidate.source_id} is larger than {MAX_FILE_BYTES} bytes")
        return data


def confined(folder: Path, relpath: str) -> tuple[Path | None, str | None, str | None]:
    """(resolved path, None, None) when ``relpath`` names a file inside ``folder`` after
    resolving ``..`` and links; else (None, drop reason, error naming the path)."""
    root = folder.resolve()
    if Path(relpath).is_absolute() or Path(relpath).drive:
        return None, str(DropReason.OUTSIDE_FOLDER), f"{relpath}: absolute path, not inside"
    try:
        path = (root / relpath).resolve()
    except (OSError, RuntimeError, ValueError) as exc:  # link loops, NUL bytes
        return None, str(DropReason.FILE_MISSING), f"{relpath}: {type(exc).__name__}"
    if not path.is_relative_to(root):
        return None, str(DropReason.OUTSIDE_FOLDER), f"{relpath}: resolves outside the folder"
    if not path.is_file():
        return None, str(DropReason.FILE_MISSING), f"{relpath}: no such file in the folder"
    return path, None, None
