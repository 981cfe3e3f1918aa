"""Canary secrets through the whole graph (crawl, merge, dataset, training, evaluation) at
DEBUG, against a server that echoes them into error texts and into data: no raw, URL-encoded
or base64 form of any of them is written anywhere (data root, Dagster home with its database
and logs, stdout, stderr)."""

from __future__ import annotations

import base64
import logging
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest

CANARY_TOKEN = "MLY|canaryTok3n+7Q9/zz"
CANARY_KEY = "AIzaCanaryKey-5x9w2"
CANARY_SIGNING = base64.urlsafe_b64encode(b"canary-signing-secret-0042").decode()


def forms(secret: str) -> set[bytes]:
    """The forms a leak could take (computed here independently of the redactor)."""
    out = {secret, quote(secret, safe=""), quote_plus(secret), quote(secret)}
    out |= {f.lower() for f in out if "%" in f}
    raw = secret.encode()
    for offset in range(3):  # base64 inside a longer encoded string, at each alignment
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            enc = encode(b"\0" * offset + raw).decode()
            out.add(enc[-(-offset * 4 // 3):(offset + len(raw)) * 4 // 3])
    return {f.encode() for f in out if len(f) >= 6}


def leaks(folders: list[Path], texts: dict[str, str]) -> list[str]:
    needles = set().union(*(forms(s) for s in (CANARY_TOKEN, CANARY_KEY, CANARY_SIGNING)))
    found = []
    for folder in folders:
        for path in folder.rglob("*"):
            if path.is_file() and not path.is_symlink():
                data = path.read_bytes()
                found += [f"{path}: {n!r}" for n in needles if n in data]
    for name, text in texts.items():
        found += [f"{name}: {n!r}" for n in needles if n in text.encode()]
    return found


def crawl_through_echoing_proxy(root: Path, cells: int = 2):
    """A Mapillary and Street View crawl of the tiny world's busiest cells through the
    echoing proxy, then the merge; returns the proxy's echo count."""
    from geo_assets.clients.mapillary import MapillaryClient, MapillarySource
    from geo_assets.clients.streetview import StreetViewClient, StreetViewSource
    from geo_assets.demo.server import DemoServer
    from geo_assets.demo.world import generate_world
    from geo_assets.ingest import ingest_cell
    from geo_assets.merge import merge_manifests
    from geo_assets.settings import (
        HttpSettings,
        IngestSettings,
        MapillarySettings,
        RetryPolicy,
        StreetViewSettings,
    )
    from geo_assets.storage import DataRoot
    from tests.hostile.server import Hostile
    from tests.ingest.ingest_helpers import busiest_cells

    world = generate_world(0, "tiny")
    http = HttpSettings(requests_per_s=0, retry=RetryPolicy(backoff_base_s=0.01,
                                                            backoff_max_s=0.02))
    data = DataRoot(str(root))
    with DemoServer(world, mapillary_token=CANARY_TOKEN, google_key=CANARY_KEY,
                    signing_secret=CANARY_SIGNING) as demo, Hostile() as proxy:
        proxy.route("/", "proxy", upstream=demo.url)
        mly = MapillarySource(MapillaryClient(
            CANARY_TOKEN, f"{proxy.url}/mapillary", f"{proxy.url}/mapillary-tiles",
            MapillarySettings(http=http)))
        sv = StreetViewSource(StreetViewClient(
            CANARY_KEY, CANARY_SIGNING, f"{proxy.url}/google",
            StreetViewSettings(max_lookups=20, http=http)), acknowledge_storage_terms=True)
        settings = IngestSettings(target_per_cell=40, workers=2)
        for cell in busiest_cells(world, 6, cells):
            ingest_cell(mly, cell, data, settings)
            ingest_cell(sv, cell, data, settings)
        merge_manifests(data)
        return proxy.echoes


def test_a_crawl_and_merge_at_debug_write_no_echoed_secret(tmp_path, capfd, caplog):
    with caplog.at_level(logging.DEBUG):
        echoes = crawl_through_echoing_proxy(tmp_path / "data")
    out, err = capfd.readouterr()
    assert echoes > 0
    logs = "\n".join(r.getMessage() for r in caplog.records)
    assert "rate limited for" in logs  # the echoed error texts were logged ...
    assert leaks([tmp_path], {"stdout": out, "stderr": err, "log": logs}) == []  # ... redacted


def test_the_leak_scan_finds_echoed_secrets_when_redaction_is_off(tmp_path, monkeypatch):
    """The scan above can fail: without the redactor the echoed secrets are found."""
    from geo_assets.clients import redact

    monkeypatch.setattr(redact.Redactor, "__call__", lambda self, text: str(text))
    crawl_through_echoing_proxy(tmp_path / "data", cells=1)
    assert leaks([tmp_path], {}) != []


@pytest.mark.slow
def test_no_canary_secret_is_written_anywhere(tmp_path, monkeypatch, capfd):
    from geo_assets.demo.server import DemoServer
    from geo_assets.demo.world import generate_world
    from pipeline import definitions, demo_run
    from pipeline.profiles import demo_profile
    from pipeline.resources import build_resources
    from tests.hostile.server import Hostile

    home, root = tmp_path / "dagster_home", tmp_path / "data"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    handler = logging.StreamHandler()
    logging.getLogger().addHandler(handler)
    monkeypatch.setattr(logging.getLogger(), "level", logging.DEBUG)
    execute = demo_run._execute
    monkeypatch.setattr(demo_run, "_execute", lambda defs, job, instance, clock, level, tags=None:
                        execute(defs, job, instance, clock, "DEBUG", tags))
    world = generate_world(0, "tiny")
    try:
        with DemoServer(world, mapillary_token=CANARY_TOKEN, google_key=CANARY_KEY,
                        signing_secret=CANARY_SIGNING) as demo, Hostile() as proxy:
            proxy.route("/", "proxy", upstream=demo.url)
            profile = demo_profile(0, "tiny")
            plain = {"demo_seed": None, "requests_per_s": 0}
            profile["mapillary"] = {**plain, "access_token": CANARY_TOKEN,
                                    "graph_url": f"{proxy.url}/mapillary",
                                    "tiles_url": f"{proxy.url}/mapillary-tiles"}
            profile["streetview"] = {**profile["streetview"], **plain, "api_key": CANARY_KEY,
                                     "signing_secret": CANARY_SIGNING,
                                     "base_url": f"{proxy.url}/google"}
            profile["training"] = {**profile["training"], "epochs": 2}
            monkeypatch.setattr(definitions, "demo_resources", lambda seed, preset, data_root:
                                build_resources({**profile, "settings": {
                                    **profile["settings"], "data_root": data_root}}))
            assert demo_run.cli(["--preset", "tiny", "--data-root", str(root)]) == 0
            echoed = proxy.echoes
    finally:
        logging.getLogger().removeHandler(handler)
    out, err = capfd.readouterr()
    assert echoed > 0 and "Report:" in out
    assert (root / "manifests" / "image_manifest.parquet").exists()
    assert list(home.rglob("*.db")) or list(home.rglob("*.sqlite"))  # the run database
    assert leaks([root, home], {"stdout": out, "stderr": err}) == []
