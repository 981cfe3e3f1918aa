"""Natural Earth land and country polygons at 1:110m, 1:50m or 1:10m.

Three sources, picked by the ``natural_earth_dir`` setting (``NaturalEarthSource.location``):

- a local folder holding the files under the names Natural Earth publishes them with
  (``ne_50m_land.geojson`` / ``.shp`` / ``.zip``, ``ne_50m_admin_0_countries.*``);
- ``"embedded"``: the 1:110m admin-0 countries shipped inside the pyogrio wheel (the offline
  demo default; land is the union of the countries);
- ``"download"`` (also the default for 1:50m and 1:10m when the setting is unset): the
  official zip, fetched once into ``land/`` under the data root with its SHA-256 recorded
  next to it (``land/ne_50m_land.zip.sha256``) and checked on every later use.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import geopandas as gpd
import numpy as np
import requests
import shapely

from geo_assets import layout
from geo_assets.errors import DataUnavailableError, InputError
from geo_assets.storage import DataRoot, sha256_hex

SCALES = ("110m", "50m", "10m")
# kind -> (Natural Earth theme folder, file-name suffix)
KINDS = {"land": ("physical", "land"), "countries": ("cultural", "admin_0_countries")}
EMBEDDED = "embedded"
DOWNLOAD = "download"
BASE_URL = "https://naciscdn.org/naturalearth"
SETTING = "natural_earth_dir"
LOCAL_SUFFIXES = (".geojson", ".json", ".shp", ".gpkg", ".zip")
# Natural Earth writes -99 where ISO has no code; ADM0_A3 (or this table) fills the gap.
MISSING_ISO = {"France": "FRA", "Norway": "NOR", "Kosovo": "KOS", "N. Cyprus": "CYN",
               "Somaliland": "SOL"}


def check_scale(scale: str) -> str:
    if scale not in SCALES:
        raise InputError(f"land_scale {scale!r} is not a Natural Earth scale: use one of "
                         f"{', '.join(SCALES)}")
    return scale


def file_stem(kind: str, scale: str) -> str:
    """``("land", "50m")`` -> ``"ne_50m_land"``, as Natural Earth names its files."""
    if kind not in KINDS:
        raise InputError(f"Natural Earth layer {kind!r} is unknown: use {', '.join(KINDS)}")
    return f"ne_{check_scale(scale)}_{KINDS[kind][1]}"


def download_url(kind: str, scale: str, base_url: str = BASE_URL) -> str:
    """Official distribution URL, e.g. ``.../50m/physical/ne_50m_land.zip``."""
    return f"{base_url.rstrip('/')}/{scale}/{KINDS[kind][0]}/{file_stem(kind, scale)}.zip"


# --- embedded data ------------------------------------------------------------------------

def embedded_countries_path() -> Path:
    """Natural Earth 1:110m admin-0 countries shipped in pyogrio's wheel (public domain)."""
    import pyogrio

    path = Path(pyogrio.__file__).parent / "tests" / "fixtures" / "naturalearth_lowres"
    shp = path / "naturalearth_lowres.shp"
    if not shp.exists():
        raise DataUnavailableError(
            f"embedded Natural Earth countries not found at {shp}; set {SETTING} "
            "to a folder with Natural Earth files")
    return shp


@lru_cache(maxsize=4)
def embedded_countries() -> gpd.GeoDataFrame:
    """Columns: iso_a3, name, continent, geometry (EPSG:4326)."""
    return normalise_countries(gpd.read_file(embedded_countries_path()))


@lru_cache(maxsize=1)
def embedded_land() -> gpd.GeoDataFrame:
    """Land as the union of the embedded countries, one row per polygon."""
    return countries_to_land(embedded_countries())


def countries_to_land(countries: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    union = shapely.union_all(shapely.make_valid(countries.geometry.values))
    return land_frame(shapely.get_parts(union))


def land_frame(geoms) -> gpd.GeoDataFrame:
    """Polygons only (lines and points from ``make_valid`` dropped), EPSG:4326."""
    parts = shapely.get_parts(shapely.make_valid(np.asarray(geoms, dtype=object)))
    polys = parts[shapely.get_type_id(parts) == 3]
    polys = shapely.get_parts(polys)  # flatten again in case make_valid made multipolygons
    polys = polys[~shapely.is_empty(polys)]
    return gpd.GeoDataFrame(geometry=gpd.GeoSeries(polys, crs=4326))


def normalise_countries(gdf: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """Lower-case columns; iso_a3 filled where Natural Earth has -99; EPSG:4326."""
    gdf = gdf.rename(columns={c: c.lower() for c in gdf.columns if c != "geometry"})
    if gdf.crs is None:
        gdf = gdf.set_crs(4326)
    iso = gdf["iso_a3"].astype(str).to_numpy(dtype=object)
    missing = ~np.char.isalpha(iso.astype(str))
    if "adm0_a3" in gdf:
        iso[missing] = gdf["adm0_a3"].to_numpy(dtype=object)[missing]
    else:
        iso[missing] = [MISSING_ISO.get(n, "-99") for n in gdf["name"][missing]]
    gdf = gdf.assign(iso_a3=iso)
    keep = ["iso_a3", "name", "continent"] + [c for c in ("name_long", "admin") if c in gdf]
    return gdf[[*keep, "geometry"]].to_crs(4326).reset_index(drop=True)


# --- local files ----------------------------------------------------------------------------

def find_local_file(folder: str | Path, kind: str, scale: str) -> Path | None:
    """The first ``ne_<scale>_<kind>.<ext>`` in ``folder`` (GeoJSON, shapefile, zip...)."""
    stem = file_stem(kind, scale)
    for suffix in LOCAL_SUFFIXES:
        path = Path(folder) / f"{stem}{suffix}"
        if path.is_file():
            return path
    return None


def read_vector(path: str | Path) -> gpd.GeoDataFrame:
    """Read a GeoJSON / shapefile / zipped shapefile; unreadable -> InputError naming it."""
    try:
        return gpd.read_file(path)
    except Exception as exc:  # pyogrio raises several types for bad files
        raise InputError(f"cannot read land/countries file {path}: {exc}") from exc


# --- download and cache ---------------------------------------------------------------------

@dataclass(frozen=True)
class Download:
    """How to fetch a file: a timeout per request, retries with exponential backoff."""

    timeout_s: float = 60.0
    retries: int = 3
    backoff_s: float = 1.0
    expected_sha256: str | None = None


def fetch_once(url: str, opts: Download) -> bytes:
    """One download with retries; raises DataUnavailableError when every attempt failed."""
    last = "no attempt"
    for attempt in range(opts.retries + 1):
        if attempt:
            time.sleep(opts.backoff_s * 2 ** (attempt - 1))
        try:
            resp = requests.get(url, timeout=opts.timeout_s)
        except requests.RequestException as exc:
            last = f"{type(exc).__name__}: {exc}"
            continue
        if 400 <= resp.status_code < 500 and resp.status_code not in (408, 429):
            raise DataUnavailableError(f"download of {url} failed: HTTP {resp.status_code}")
        if resp.status_code != 200:
            last = f"HTTP {resp.status_code}"
            continue
        data = resp.content
        digest = sha256_hex(data)
        if opts.expected_sha256 and digest != opts.expected_sha256.lower():
            last = f"checksum mismatch: expected {opts.expected_sha256}, got {digest}"
            continue
        return data
    raise DataUnavailableError(f"download of {url} failed after {opts.retries + 1} "
                               f"attempts ({last})")


def cached_download(root: DataRoot, relpath: str, url: str, opts: Download) -> bytes:
    """File bytes from ``root/relpath`` when its recorded SHA-256 matches, else downloaded
    (once) and stored with ``relpath.sha256``. A cached file that no longer matches its
    checksum is treated as corrupt and fetched again."""
    checksum = relpath + layout.CHECKSUM_SUFFIX
    if root.exists(relpath) and root.exists(checksum):
        data = root.read_bytes(relpath)
        recorded = root.read_bytes(checksum).decode().split()[0]
        if sha256_hex(data) == recorded:
            return data
    data = fetch_once(url, opts)
    root.write_bytes(relpath, data)
    name = relpath.rsplit("/", 1)[-1]
    root.write_bytes(checksum, f"{sha256_hex(data)}  {name}\n".encode())
    return data


def read_zip_bytes(data: bytes, name: str) -> gpd.GeoDataFrame:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_bytes(data)
        return read_vector(path)


# --- the source ------------------------------------------------------------------------------

@dataclass(frozen=True)
class NaturalEarthSource:
    """Where Natural Earth layers come from.

    ``location``: None (embedded at 1:110m, else a cached download), ``"embedded"``,
    ``"download"``, or a local folder. ``cache``: data root for downloads (``land/``).
    """

    location: str | None = None
    cache: DataRoot | None = None
    base_url: str = BASE_URL
    download: Download = Download()

    def mode(self, scale: str) -> str:
        check_scale(scale)
        if self.location in (None, ""):
            return EMBEDDED if scale == "110m" else DOWNLOAD
        if self.location in (EMBEDDED, DOWNLOAD):
            if self.location == EMBEDDED and scale != "110m":
                raise InputError(f"{SETTING}='embedded' has only 1:110m data, not {scale}: "
                                 "set land_scale to 110m or point it at a folder")
            return self.location
        return "local"

    def read(self, kind: str, scale: str) -> gpd.GeoDataFrame:
        """The raw layer as published (columns as Natural Earth names them)."""
        mode = self.mode(scale)
        stem = file_stem(kind, scale)
        if mode == EMBEDDED:
            return embedded_countries() if kind == "countries" else embedded_land()
        if mode == "local":
            if not Path(self.location).is_dir():
                raise InputError(f"{SETTING} {self.location!r} is not a folder")
            path = find_local_file(self.location, kind, scale)
            if path is None:
                raise InputError(
                    f"{SETTING} {self.location!r} has no {stem} file: expected one of "
                    + ", ".join(stem + s for s in LOCAL_SUFFIXES))
            return read_vector(path)
        return self._read_download(kind, scale)

    def _read_download(self, kind: str, scale: str) -> gpd.GeoDataFrame:
        stem = file_stem(kind, scale)
        if self.cache is None:
            raise InputError(f"no data root to cache {stem}.zip in: set {SETTING} or data_root")
        url = download_url(kind, scale, self.base_url)
        try:
            data = cached_download(self.cache, layout.natural_earth_zip(stem), url,
                                   self.download)
        except DataUnavailableError as exc:
            raise DataUnavailableError(
                f"Natural Earth {stem} is not available offline and could not be downloaded "
                f"({exc}). Set {SETTING} to a folder holding {stem}.geojson, .shp or .zip "
                f"(from {url})") from exc
        return read_zip_bytes(data, f"{stem}.zip")

    def land(self, scale: str) -> gpd.GeoDataFrame:
        """Land polygons, one row per polygon, EPSG:4326."""
        gdf = self.read("land", scale)
        frame = land_frame(gdf.to_crs(4326).geometry.values if gdf.crs else gdf.geometry.values)
        frame.attrs["source"] = self.describe("land", scale)
        return frame

    def countries(self, scale: str) -> gpd.GeoDataFrame:
        """Admin-0 countries: iso_a3, name, continent, geometry (EPSG:4326)."""
        gdf = self.read("countries", scale)
        frame = gdf.copy() if self.mode(scale) == EMBEDDED else normalise_countries(gdf)
        frame.attrs["source"] = self.describe("countries", scale)
        return frame

    def countries_for_region(self, scale: str) -> gpd.GeoDataFrame:
        """Countries at ``scale`` or, when a local folder lacks them, at the nearest coarser
        scale it has: a region needs only country outlines (widened by a margin), while the
        land keeps its own scale."""
        if self.mode(scale) == "local" and Path(self.location).is_dir():
            for coarser in reversed(SCALES[: SCALES.index(scale) + 1]):
                if find_local_file(self.location, "countries", coarser):
                    return self.countries(coarser)
        return self.countries(scale)

    def describe(self, kind: str, scale: str) -> str:
        mode = self.mode(scale)
        if mode == EMBEDDED:
            return "embedded Natural Earth 1:110m countries (pyogrio)"
        if mode == "local":
            return str(find_local_file(self.location, kind, scale))
        return download_url(kind, scale, self.base_url)
