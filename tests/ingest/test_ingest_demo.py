"""The per-cell pipeline against the demo API server: faults, resume after SIGKILL,
determinism, clear failures, the Street View terms, and no secret in any output."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from geo_assets import layout
from geo_assets.cells import points_to_cells
from geo_assets.clients.http import CredentialError, QuotaExceededError, TransientServiceError
from geo_assets.clients.streetview import StreetViewClient, StreetViewSource
from geo_assets.errors import InputError
from geo_assets.ingest import RETRYABLE_REASONS, ingest_cell
from geo_assets.merge import merge_manifests
from geo_assets.settings import IngestSettings
from geo_assets.storage import DataRoot
from tests.ingest.ingest_helpers import CountingSource, busiest_cells, demo_mapillary_source

demo_server = pytest.importorskip("geo_assets.demo.server")
demo_world = pytest.importorskip("geo_assets.demo.world")
FaultConfig = pytest.importorskip("geo_assets.demo.faults").FaultConfig

SETTINGS = IngestSettings(target_per_cell=1000, workers=4)
FAULTS = FaultConfig(seed=3, rate_5xx=0.10, rate_429=0.05, rate_truncated_jpeg=0.02,
                     rate_drop_connection=0.02, rate_slow=0.02, slow_seconds=0.2,
                     rate_rate_limit_403=0.01, rate_query_timeout_400=0.01, rate_non_image=0.02,
                     retry_after_s=0)


@pytest.fixture(scope="module")
def world():
    return demo_world.generate_world(0, "tiny")


@pytest.fixture(scope="module")
def server(world):
    with demo_server.DemoServer(world) as s:
        yield s


@pytest.fixture(scope="module")
def cells(world):
    return busiest_cells(world, 6, 2)


@pytest.fixture(scope="module")
def clean_run(server, cells, tmp_path_factory):
    """An uninterrupted, fault-free crawl of the two busiest cells: the reference."""
    root = DataRoot(str(tmp_path_factory.mktemp("clean")))
    source = demo_mapillary_source(server)
    results = {c: ingest_cell(source, c, root, SETTINGS) for c in cells}
    return root, results


def test_signed_thumbnail_links_are_used_as_given(world, tmp_path):
    """Each thumbnail is fetched once with the link the Graph API gave: no 403 and no refresh
    request (a redacted signature used to cost a failed fetch and a Graph call per image)."""
    with demo_server.DemoServer(world) as fresh:
        root = DataRoot(str(tmp_path))
        result = ingest_cell(demo_mapillary_source(fresh), busiest_cells(world, 6, 1)[0], root,
                             SETTINGS)
        counts = fresh.counters
    table = read(root, result.manifest_relpath)
    assert table["kept"].sum() > 10
    assert counts.get("status.403", 0) == 0
    assert counts.get("endpoint.mapillary.api", 0) == 0  # no per-image link refresh


def world_ids(world, cell: str) -> dict[str, object]:
    return {f"mapillary:{im.image_id}": im for im in world.images
            if points_to_cells(np.array([im.lat]), np.array([im.lon]), len(cell))[0] == cell}


def read(root: DataRoot, rel: str) -> pl.DataFrame:
    return pl.read_parquet(root.path(rel))


def test_clean_crawl_records_every_image_of_the_cell(world, clean_run, cells):
    root, results = clean_run
    for cell in cells:
        table = read(root, results[cell].manifest_relpath)
        truth = world_ids(world, cell)
        assert set(table["image_id"]) == set(truth)  # nothing lost, nothing extra
        assert table["image_id"].is_unique().all()
        reasons = dict(zip(table["image_id"], table["drop_reason"]))
        for image_id, im in truth.items():
            if im.artefact == "corrupt":
                assert reasons[image_id] == "corrupt"
            elif im.artefact == "dark":
                assert reasons[image_id] == "too_dark"
        kept = table.filter(pl.col("kept"))
        assert kept["drop_reason"].null_count() == kept.height
        for sha in kept["sha256"]:
            assert root.exists(layout.image(sha))
        stats = json.loads(root.read_bytes(layout.cell_stats("mapillary", cell)))
        assert stats["status"] == "ok" and stats["version"] == results[cell].version
        assert stats["listing"]["coverage"] == "tiles"


def test_faults_every_good_image_fetched_once_and_same_manifest(server, world, clean_run,
                                                                cells, tmp_path):
    _, ref = clean_run
    root = DataRoot(str(tmp_path / "faulty"))
    with demo_server.DemoServer(world, faults=FAULTS) as faulty:
        source = CountingSource(demo_mapillary_source(faulty))
        results = {c: ingest_cell(source, c, root, SETTINGS) for c in cells}
        counters = faulty.counters
    assert sum(v for k, v in counters.items() if k.startswith("fault.")) > 20
    for fault in ("5xx", "429", "drop_connection", "truncated_jpeg", "non_image"):
        assert counters.get(f"fault.{fault}", 0) > 0, fault  # each kind of fault was met
    seen: set[str] = set()
    for cell in cells:
        table = read(root, results[cell].manifest_relpath)
        assert "fetch_failed" not in set(table["drop_reason"].drop_nulls())
        good = table.filter(pl.col("sha256").is_not_null())["image_id"].to_list()
        assert all(source.valid.get(i) == 1 for i in good), "a good image was fetched twice"
        seen.update(table["image_id"])
        # faults change nothing in the outcome: byte-identical manifest
        assert results[cell].version == ref[cell].version
    assert set(source.valid) <= seen


def test_sigkill_mid_cell_then_rerun_gives_the_identical_manifest(server, clean_run, cells,
                                                                  tmp_path):
    ref_root, ref = clean_run
    cell = cells[0]
    root = tmp_path / "killed"
    script = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from ingest_helpers import demo_mapillary_source
        from geo_assets.ingest import ingest_cell
        from geo_assets.settings import IngestSettings
        from geo_assets.storage import DataRoot

        class Server:
            url = {server.url!r}

        def progress(done, total, stage="", **_):
            if stage == "download" and done >= total // 2:
                print("HALF", done, total, flush=True)
                time.sleep(60)

        ingest_cell(demo_mapillary_source(Server), {cell!r}, DataRoot({str(root)!r}),
                    IngestSettings(target_per_cell=1000, workers=4), progress)
    """)
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                             cwd=Path(__file__).parents[2])
    try:
        line = child.stdout.readline()
        assert line.startswith("HALF"), line
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL
    data_root = DataRoot(str(root))
    assert not data_root.exists(layout.cell_stats("mapillary", cell))  # not marked done
    result = ingest_cell(demo_mapillary_source(server), cell, data_root, SETTINGS)
    ref_table = read(ref_root, ref[cell].manifest_relpath)
    retryable = ref_table["drop_reason"].is_in(sorted(RETRYABLE_REASONS)).sum()  # not journalled
    assert result.stats["resumed"] >= int(line.split()[1]) - retryable > 0
    assert result.stats["downloaded"] < result.n_rows
    assert result.version == ref[cell].version
    assert (Path(data_root.path(result.manifest_relpath)).read_bytes()
            == Path(ref_root.path(ref[cell].manifest_relpath)).read_bytes())
    assert not list(root.rglob("*.journal.jsonl"))
    # the kill may leave a temporary file behind, never a half file under a final name
    import hashlib

    for image in root.rglob("*.jpg"):
        assert hashlib.sha256(image.read_bytes()).hexdigest() == image.stem


def test_merge_is_deterministic_and_versions_every_cell(clean_run, cells):
    root, results = clean_run
    first = merge_manifests(root)
    path, digest = first
    assert digest == merge_manifests(root).sha256
    merged = pl.read_parquet(path)
    assert merged.height == sum(r.n_rows for r in results.values())
    assert merged["image_id"].is_unique().all()
    versions = pl.read_parquet(first.versions_path)
    assert versions.sort("cell_id")["cell_id"].to_list() == sorted(cells)
    assert dict(zip(versions["cell_id"], versions["version"])) == {
        c: r.version for c, r in results.items()}
    assert first.metadata()["sha256"] == digest


def test_cross_cell_dedup_at_merge_is_order_independent(tmp_path):
    from geo_assets.manifest import rows_to_table, table_to_parquet_bytes

    def row(cell, i, lat, lon, captured):
        return {"image_id": f"local:{cell}-{i}", "source": "local", "source_id": f"{cell}-{i}",
                "lat_deg": lat, "lon_deg": lon, "cell_id": cell, "kept": True,
                "captured_at": captured, "sha256": f"{cell}{i}"}

    # cells "2" and "3" meet at lon 0; two images 5 m apart across the border
    layouts = {"2": [row("2", 0, 45.0, -0.00003, 2000)], "3": [row("3", 0, 45.0, 0.00003, 1000)]}
    hashes = []
    for order in (["2", "3"], ["3", "2"]):
        root = DataRoot(str(tmp_path / "".join(order)))
        for cell in order:
            root.write_bytes(layout.cell_manifest("local", cell),
                             table_to_parquet_bytes(rows_to_table(layouts[cell])))
            root.write_bytes(layout.cell_stats("local", cell), b"{}")
        result = merge_manifests(root)
        merged = pl.read_parquet(result.path).sort("image_id")
        assert merged["kept"].to_list() == [True, False]  # the lower cell id wins
        assert merged["drop_reason"].to_list() == [None, "duplicate_location"]
        hashes.append(result.sha256)
    assert hashes[0] == hashes[1]


def test_invalid_token_fails_clearly_and_marks_nothing(server, cells, tmp_path):
    root = DataRoot(str(tmp_path))
    with pytest.raises(CredentialError) as err:
        ingest_cell(demo_mapillary_source(server, token="MLY|wrong-token"), cells[0], root,
                    SETTINGS)
    assert "MAPILLARY_TOKEN" in str(err.value) and "wrong-token" not in str(err.value)
    assert not root.exists(layout.cell_stats("mapillary", cells[0]))
    with pytest.raises(InputError, match="token"):
        ingest_cell(demo_mapillary_source(server, token=""), cells[0], root, SETTINGS)


def test_transient_outage_raises_and_the_cell_is_retried_later(world, cells, tmp_path):
    root = DataRoot(str(tmp_path))
    with demo_server.DemoServer(world, faults=FaultConfig(rate_5xx=1.0)) as down:
        source = demo_mapillary_source(down)
        object.__setattr__(source.client.api.settings.retry, "max_retries", 2)
        with pytest.raises(TransientServiceError, match="retry"):
            ingest_cell(source, cells[0], root, SETTINGS)
    assert not root.exists(layout.cell_stats("mapillary", cells[0]))
    assert not root.exists(layout.cell_manifest("mapillary", cells[0]))


def test_quota_exhaustion_is_reported(world, cells, tmp_path):
    root = DataRoot(str(tmp_path))
    faults = FaultConfig(rate_429=1.0, retry_after_s=3600)
    with (demo_server.DemoServer(world, faults=faults) as limited,
          pytest.raises(QuotaExceededError, match="quota")):
        ingest_cell(demo_mapillary_source(limited), cells[0], root, SETTINGS)
    assert not root.exists(layout.cell_stats("mapillary", cells[0]))


def test_no_coverage_writes_an_empty_manifest_that_says_so(server, world, tmp_path):
    root = DataRoot(str(tmp_path))
    lat, lon = world.image_lat_lon
    occupied = set(points_to_cells(np.asarray(lat), np.asarray(lon), 6))
    empty = next(c for c in ("000000", "011111", "100000", "111111") if c not in occupied)
    result = ingest_cell(demo_mapillary_source(server), empty, root, SETTINGS)
    assert result.n_rows == 0 and result.stats["status"] == "no_coverage"
    assert "no mapillary imagery" in result.stats["message"]
    assert read(root, result.manifest_relpath).height == 0


def test_streetview_refuses_to_store_without_acknowledgement(server, world, tmp_path):
    root = DataRoot(str(tmp_path))
    client = StreetViewClient("demo-key", base_url=server.url + "/google")
    before = server.counters.get("endpoint.streetview.image", 0)
    with pytest.raises(InputError, match="acknowledge_storage_terms=True"):
        ingest_cell(StreetViewSource(client), "320013", root, SETTINGS)
    assert server.counters.get("endpoint.streetview.image", 0) == before
    assert not root.glob(f"{layout.IMAGES_DIR}/*")


def test_no_secret_reaches_manifest_stats_or_logs(world, tmp_path, caplog):
    secret = "c2lnbmluZy1zZWNyZXQtZm9yLXRlc3Rz"  # url-safe base64
    key = "AIza-test-key-0123456789"
    root = DataRoot(str(tmp_path))
    pano = world.panoramas[0]
    cell = str(points_to_cells(np.array([pano.lat]), np.array([pano.lon]), 6)[0])
    faults = FaultConfig(seed=1, rate_5xx=0.2, retry_after_s=0)
    with demo_server.DemoServer(world, google_key=key, signing_secret=secret,
                                faults=faults) as s, caplog.at_level(logging.DEBUG), \
            caplog.at_level(logging.DEBUG, logger="urllib3"):  # other tests raise its level
        client = StreetViewClient(key, signing_secret=secret, base_url=s.url + "/google")
        source = StreetViewSource(client, acknowledge_storage_terms=True)
        result = ingest_cell(source, cell, root, IngestSettings(target_per_cell=8))
        merged = merge_manifests(root)
    assert result.n_kept > 0
    blobs = [Path(merged.path).read_bytes(), Path(merged.versions_path).read_bytes()]
    blobs += [p.read_bytes() for p in Path(root.base, layout.MANIFESTS_DIR).rglob("*")
              if p.is_file()]
    blobs.append(caplog.text.encode())
    blobs.append(json.dumps(result.summary()).encode() + json.dumps(result.stats).encode())
    import re

    leak = re.compile(rb"(signature|sig)=(?!REDACTED)")
    for blob in blobs:
        assert key.encode() not in blob and secret.encode() not in blob
        assert not leak.search(blob) and b"/cdn/" not in blob
    assert b"signature=REDACTED" in caplog.text.encode()  # urllib3's own log was scrubbed


def test_forced_recrawl_downloads_nothing_already_stored(server, clean_run, cells):
    from dataclasses import replace

    root, results = clean_run
    again = ingest_cell(demo_mapillary_source(server), cells[1], root,
                        replace(SETTINGS, force=True))
    assert not again.skipped and again.stats["downloaded"] == 0
    assert again.stats["resumed"] == again.n_rows - again.drop_reasons.get("out_of_cell", 0)
    assert again.version == results[cells[1]].version


def test_expired_thumbnail_links_are_refreshed(world, cells):
    import time

    from geo_assets.clients.base import ListRequest

    with demo_server.DemoServer(world, thumb_ttl_s=0.5) as s:
        source = demo_mapillary_source(s)
        cand = source.list_candidates(ListRequest(cells[0], 5))[0]
        time.sleep(1.6)  # the signed link from the listing has expired (whole seconds)
        data = source.fetch(cand)
        assert data[:2] == b"\xff\xd8"
        assert s.counters.get("status.403", 0) == 1  # one refusal, then a fresh link


def test_streetview_bad_key_is_a_credential_error(server, tmp_path):
    client = StreetViewClient("wrong-key", base_url=server.url + "/google")
    source = StreetViewSource(client, acknowledge_storage_terms=True)
    with pytest.raises(CredentialError, match="REQUEST_DENIED") as err:
        ingest_cell(source, "320013", DataRoot(str(tmp_path)), SETTINGS)
    assert "wrong-key" not in str(err.value)


def test_merge_of_nothing_is_an_empty_manifest(tmp_path):
    from geo_assets.manifest import MANIFEST_SCHEMA

    result = merge_manifests(DataRoot(str(tmp_path)))
    assert result.n_rows == 0 and result.n_cells == 0
    import pyarrow.parquet as pq

    assert pq.read_schema(result.path).names == MANIFEST_SCHEMA.names
