"""Natural Earth sources: local folders, the embedded data, and the cached download, tested
over real HTTP against a loopback server (no internet)."""

from __future__ import annotations

import hashlib
import http.server
import io
import threading
import time
import zipfile
from typing import ClassVar

import geopandas as gpd
import pytest
import shapely

from geo_assets import layout
from geo_assets.errors import DataUnavailableError, InputError
from geo_assets.naturalearth import Download, NaturalEarthSource, file_stem
from geo_assets.storage import DataRoot

FAST = Download(timeout_s=2.0, retries=2, backoff_s=0.01)
ZIP = layout.natural_earth_zip("ne_50m_land")


def small_land_zip() -> bytes:
    """A zip holding ne_50m_land.geojson with two squares, as the server's payload."""
    gdf = gpd.GeoDataFrame(geometry=[shapely.box(0, 0, 10, 10), shapely.box(20, 20, 25, 25)],
                           crs=4326)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("ne_50m_land.geojson", gdf.to_json())
    return buf.getvalue()


class Handler(http.server.BaseHTTPRequestHandler):
    """Serves ``payload`` at the Natural Earth path; ``plan`` is a list of per-request
    behaviours consumed in order ("ok", "503", "slow", "404"), then "ok" for ever."""

    payload = b""
    plan: ClassVar[list[str]] = []
    requests: ClassVar[list[str]] = []

    def do_GET(self):
        type(self).requests.append(self.path)
        action = self.plan.pop(0) if self.plan else "ok"
        if action == "slow":
            time.sleep(0.6)
        if action in ("503", "404"):
            self.send_response(int(action))
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.payload)))
        self.end_headers()
        self.wfile.write(self.payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    Handler.payload, Handler.plan, Handler.requests = small_land_zip(), [], []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", Handler
    httpd.shutdown()
    httpd.server_close()


def source(url: str, root: DataRoot, opts: Download = FAST) -> NaturalEarthSource:
    return NaturalEarthSource(None, cache=root, base_url=url, download=opts)


def test_download_once_with_checksum(server, data_root):
    url, handler = server
    land = source(url, data_root).land("50m")
    assert len(land) == 2 and land.crs.to_epsg() == 4326
    assert handler.requests == ["/50m/physical/ne_50m_land.zip"]
    data = data_root.read_bytes(ZIP)
    recorded = data_root.read_bytes(ZIP + layout.CHECKSUM_SUFFIX).decode().split()
    assert recorded == [hashlib.sha256(data).hexdigest(), "ne_50m_land.zip"]
    source(url, data_root).land("50m")  # cached: no second request
    assert len(handler.requests) == 1


def test_corrupt_cache_is_fetched_again(server, data_root):
    url, handler = server
    source(url, data_root).land("50m")
    data_root.write_bytes(ZIP, b"truncated")
    assert len(source(url, data_root).land("50m")) == 2
    assert len(handler.requests) == 2
    assert data_root.read_bytes(ZIP) == handler.payload


def test_retries_with_backoff_after_server_errors_and_timeouts(server, data_root):
    url, handler = server
    handler.plan[:] = ["503", "slow"]
    opts = Download(timeout_s=0.3, retries=2, backoff_s=0.01)
    assert len(source(url, data_root, opts).land("50m")) == 2
    assert len(handler.requests) == 3


def test_checksum_mismatch_is_refused(server, data_root):
    url, handler = server
    opts = Download(timeout_s=2.0, retries=1, backoff_s=0.01, expected_sha256="0" * 64)
    with pytest.raises(DataUnavailableError, match="checksum mismatch") as err:
        source(url, data_root, opts).land("50m")
    assert "natural_earth_dir" in str(err.value)
    assert len(handler.requests) == 2  # retried once
    assert not data_root.exists(ZIP)  # nothing half-trusted is kept
    good = Download(retries=0, expected_sha256=hashlib.sha256(handler.payload).hexdigest())
    assert len(source(url, data_root, good).land("50m")) == 2


def test_not_found_is_not_retried(server, data_root):
    url, handler = server
    handler.plan[:] = ["404"]
    with pytest.raises(DataUnavailableError, match="HTTP 404"):
        source(url, data_root).land("50m")
    assert len(handler.requests) == 1


def test_offline_without_local_copy_names_the_setting(data_root):
    closed = "http://127.0.0.1:9"  # discard port: connection refused
    with pytest.raises(DataUnavailableError, match="natural_earth_dir") as err:
        source(closed, data_root, Download(timeout_s=0.5, retries=1, backoff_s=0.01)).land("10m")
    assert "ne_10m_land" in str(err.value)


def test_local_folder_geojson_and_countries(shared_data):
    folder = shared_data("naturalearth")
    src = NaturalEarthSource(str(folder))
    land = src.land("110m")
    assert len(land) > 100 and land.attrs["source"].endswith("ne_110m_land.geojson")
    countries = src.countries("50m")
    codes = set(countries["iso_a3"])
    assert {"FRA", "NOR", "HRV", "SVN"} <= codes and "-99" not in codes


def test_region_countries_fall_back_to_a_coarser_scale(shared_data):
    """The shared folder has no 1:10m countries: regions use its 1:50m ones."""
    src = NaturalEarthSource(str(shared_data("naturalearth")))
    assert src.countries_for_region("10m").attrs["source"].endswith(
        "ne_50m_admin_0_countries.geojson")
    assert src.countries_for_region("110m").attrs["source"].endswith(
        "ne_110m_admin_0_countries.geojson")


def test_local_folder_shapefile_and_zip(tmp_path):
    """Natural Earth publishes zipped shapefiles: both the unpacked and the zipped form load."""
    shp_dir, zip_dir = tmp_path / "shp", tmp_path / "zip"
    shp_dir.mkdir()
    zip_dir.mkdir()
    gdf = gpd.GeoDataFrame(geometry=[shapely.box(1, 1, 2, 2)], crs=4326)
    gdf.to_file(shp_dir / f"{file_stem('land', '10m')}.shp")
    with zipfile.ZipFile(zip_dir / "ne_10m_land.zip", "w") as zf:
        for member in shp_dir.iterdir():
            zf.write(member, member.name)
    for folder in (shp_dir, zip_dir):
        land = NaturalEarthSource(str(folder)).land("10m")
        assert land.geometry.iloc[0].equals(shapely.box(1, 1, 2, 2))


def test_embedded_default():
    src = NaturalEarthSource()
    assert src.mode("110m") == "embedded" and src.mode("50m") == "download"
    countries = src.countries("110m")
    assert {"FRA", "NOR", "HRV"} <= set(countries["iso_a3"])
    land = src.land("110m")
    assert land.geometry.union_all().area == pytest.approx(
        countries.geometry.union_all().area, rel=1e-6)


@pytest.mark.parametrize("location, scale, message", [
    ("embedded", "50m", "only 1:110m"),
    (None, "5m", "land_scale '5m'"),
])
def test_bad_source_settings(location, scale, message):
    with pytest.raises(InputError, match=message):
        NaturalEarthSource(location).land(scale)


def test_folder_without_the_file_names_setting_and_file(tmp_path):
    with pytest.raises(InputError, match="natural_earth_dir .* has no ne_50m_land"):
        NaturalEarthSource(str(tmp_path)).land("50m")
    with pytest.raises(InputError, match="is not a folder"):
        NaturalEarthSource(str(tmp_path / "missing")).land("50m")


def test_unreadable_land_file_names_it(tmp_path):
    bad = tmp_path / "ne_110m_land.geojson"
    bad.write_text("this is not GeoJSON")
    with pytest.raises(InputError, match="cannot read land/countries file") as err:
        NaturalEarthSource(str(tmp_path)).land("110m")
    assert str(bad) in str(err.value)
