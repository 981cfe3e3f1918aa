"""Local photos as an image source: EXIF GPS, or a CSV/Parquet sidecar.

A sidecar has one row per photo with columns ``file`` (or ``filename``/``path``, relative to
the folder), ``lat``, ``lon`` and optionally ``group`` (photographer, place), ``license``,
``attribution``/``creator``, ``heading``. Without a ``group`` column, photos at the same
coordinates form one group (e.g. the four headings of one place). Without a sidecar, every
JPEG/PNG under the folder with EXIF GPS tags is used, grouped by its sub-folder.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
from PIL import Image

from geo_assets.cells import check_cell_id, points_to_cells
from geo_assets.clients.base import Candidate, ListRequest
from geo_assets.errors import InputError
from geo_assets.manifest import Source

GPS_IFD = 0x8825
EXIF_IFD = 0x8769
DATETIME_ORIGINAL = 0x9003
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp"}
FILE_COLUMNS = ("file", "filename", "path")


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


def _dms(values, ref) -> float | None:
    try:
        d, m, s = (float(v) for v in values)
    except (TypeError, ValueError):
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
    if lat is None or lon is None or abs(lat) > 90 or abs(lon) > 180:
        return None
    captured = None
    try:
        when = dt.datetime.strptime(str(taken), "%Y:%m:%d %H:%M:%S").replace(tzinfo=dt.UTC)
        captured = int(when.timestamp() * 1000)
    except ValueError:
        pass
    return lat, lon, captured


def _read_sidecar(path: Path) -> pl.DataFrame:
    if path.suffix.lower() == ".parquet":
        return pl.read_parquet(path)
    if path.suffix.lower() in (".csv", ".txt"):
        return pl.read_csv(path, infer_schema_length=10_000)
    raise InputError(f"sidecar {path} must be a .csv or .parquet file")


def _col(df: pl.DataFrame, *names: str) -> str | None:
    return next((n for n in names if n in df.columns), None)


def photos_from_sidecar(folder: Path, sidecar: Path) -> list[LocalPhoto]:
    df = _read_sidecar(sidecar)
    file_col = _col(df, *FILE_COLUMNS)
    if file_col is None or "lat" not in df.columns or "lon" not in df.columns:
        raise InputError(f"sidecar {sidecar} needs columns file (or filename/path), lat, lon; "
                         f"it has {df.columns}")
    group_col, heading_col = _col(df, "group", "group_id"), _col(df, "heading", "heading_deg")
    lic_col, attr_col = _col(df, "license", "licence"), _col(df, "attribution", "creator")
    photos = []
    for row in df.iter_rows(named=True):
        lat, lon = row["lat"], row["lon"]
        if lat is None or lon is None:
            continue
        group = row[group_col] if group_col else f"{float(lat):.7f},{float(lon):.7f}"
        photos.append(LocalPhoto(
            relpath=str(row[file_col]), lat=float(lat), lon=float(lon),
            group=None if group is None else str(group),
            heading=float(row[heading_col]) if heading_col and row[heading_col] is not None
            else None,
            license=row[lic_col] if lic_col else None,
            attribution=row[attr_col] if attr_col else None))
    return photos


def photos_from_exif(folder: Path) -> list[LocalPhoto]:
    photos = []
    for path in sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
        found = exif_location(path)
        if found is not None:
            rel = path.relative_to(folder).as_posix()
            photos.append(LocalPhoto(relpath=rel, lat=found[0], lon=found[1],
                                     group=path.parent.relative_to(folder).as_posix() or ".",
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

    def cells_at(self, level: int) -> np.ndarray:
        """The level-``level`` cell of every photo (cached)."""
        if level not in self._cells:
            lat = np.array([p.lat for p in self.photos], dtype=np.float64)
            lon = np.array([p.lon for p in self.photos], dtype=np.float64)
            self._cells[level] = points_to_cells(lat, lon, level)
        return self._cells[level]

    def list_candidates(self, request: ListRequest) -> list[Candidate]:
        cell_id = check_cell_id(request.cell_id)
        idx = np.flatnonzero(self.cells_at(len(cell_id)) == cell_id)
        self.last_listing = {"coverage": "folder", "photos_in_folder": len(self.photos)}
        cands = [self._candidate(self.photos[i]) for i in idx]
        return sorted(cands, key=lambda c: c.image_id)

    def _candidate(self, p: LocalPhoto) -> Candidate:
        return Candidate(
            image_id=f"{Source.LOCAL}:{p.relpath}", source=str(Source.LOCAL),
            source_id=p.relpath, lat_deg=p.lat, lon_deg=p.lon, group_id=p.group,
            captured_at_ms=p.captured_at_ms, heading_deg=p.heading,
            license=p.license or self.default_license,
            attribution=p.attribution or self.default_attribution,
            fetch_ref=self.folder / p.relpath)

    def fetch(self, candidate: Candidate) -> bytes:
        return Path(candidate.fetch_ref).read_bytes()
