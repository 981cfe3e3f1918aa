"""The Dagster UI in a real browser: materialize a small per-cell graph into a temporary
instance, start ``dagster-webserver`` on loopback, and check in headless Chromium that the
asset graph, the crawl-cell partitions and the model's lineage are shown. Screenshots go to
tests/artifacts/ (gitignored; CI can keep them)."""

import os
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import pytest

from geo_assets.storage import DataRoot
from pipeline.resources import GeoscoutSettings

from . import ops_data, ui_defs
from .cdp import Chromium
from .ops_data import free_port

pytestmark = [pytest.mark.browser, pytest.mark.slow]

HERE = Path(__file__).resolve().parent
PROJECT = HERE.parents[1]
CELLS = ["0312", "0313", "2130"]


def _materialize(home: Path, data_root: DataRoot) -> None:
    resources = {"settings": GeoscoutSettings(data_root=data_root.url)}
    with dg.DagsterInstance.from_config(str(home)) as instance:
        instance.add_dynamic_partitions("crawl_cells", CELLS)
        for cell in CELLS:
            assert dg.materialize([ui_defs.mapillary_images], instance=instance,
                                  partition_key=cell).success
        downstream = [ui_defs.image_manifest, ui_defs.shards, ui_defs.trained_model]
        assert dg.materialize([ui_defs.mapillary_images, *downstream], instance=instance,
                              selection=downstream, resources=resources).success


def _wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"dagster-webserver exited ({proc.returncode}):\n"
                        f"{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"dagster-webserver did not answer {url} in {timeout:.0f}s:\n"
                f"{log.read_text()[-3000:]}")


@contextmanager
def _webserver(home: Path, target: list[str], log: Path, **env: str):
    """``dagster-webserver`` on a free loopback port for ``target`` (-f FILE or -m MODULE)."""
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    port = free_port()
    exe = Path(sys.executable).with_name("dagster-webserver")
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(exe), "-h", "127.0.0.1", "-p", str(port), *target, "-d", str(PROJECT)],
            cwd=PROJECT, env={**os.environ, "DAGSTER_HOME": str(home), **env}, stdout=out,
            stderr=subprocess.STDOUT)
    try:
        _wait_http(f"http://127.0.0.1:{port}/server_info", proc, log)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture
def webserver(tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    built = ops_data.build(DataRoot(str(tmp_path / "data")))
    _materialize(home, built.root)
    with _webserver(home, ["-f", str(HERE / "ui_defs.py")], tmp_path / "webserver.log",
                    GEOSCOUT_DATA_ROOT=built.root.url) as url:
        yield url, built


@pytest.fixture
def browser(chromium, tmp_path):
    b = Chromium(chromium, tmp_path / "chromium-profile", free_port(),
                 tmp_path / "chromium.log")
    yield b
    b.close()


# Dagster's first-visit "join the community" dialog, dismissed as a click on Skip would.
DISMISS_NUX = "localStorage.setItem('communityNux', JSON.stringify('1'))"
# Expand every collapsed asset group in the graph (one toggle per group, the layout redraws).
EXPAND_GROUPS = """(async () => {
  let n = 0;
  for (let i = 0; i < 20; i++) {
    const icon = document.querySelector('[aria-label=unfold_more]');
    if (!icon) break;
    (icon.closest('button') || icon.parentElement).click();
    n++;
    await new Promise(r => setTimeout(r, 1000));
  }
  return n;
})()"""
CHAIN = ["mapillary_images", "image_manifest", "shards", "trained_model"]


def test_asset_graph_partitions_and_model_lineage_in_chromium(webserver, browser,
                                                              artifacts_dir):
    base, built = webserver
    browser.goto(f"{base}/server_info")
    browser.js(DISMISS_NUX)
    browser.viewport(2600, 1000)  # the graph draws only what is in view

    # The global asset graph: the stage groups, then, expanded, every asset of the chain.
    browser.goto(f"{base}/asset-groups")
    browser.wait_for_text(["Global asset lineage", "ingest", "dataset", "train"], timeout=90)
    assert browser.js(EXPAND_GROUPS) == 3
    text = browser.wait_for_text(CHAIN, timeout=30)
    assert "3 partitions" in text
    browser.screenshot(artifacts_dir / "ui_asset_graph.png")
    browser.viewport(1600, 1000)

    # The per-cell asset's partitions: each crawl cell is listed as materialized.
    browser.goto(f"{base}/assets/mapillary_images?view=partitions")
    browser.wait_for_text(["Materialized (3)", "Missing (0)", *CELLS], timeout=60)
    browser.screenshot(artifacts_dir / "ui_cell_partitions.png")

    # The model's lineage as metadata on its latest materialization.
    browser.goto(f"{base}/assets/trained_model")
    browser.wait_for_text(
        ["lineage/manifest_hash", built.manifest_sha256, "lineage/n_train_images",
         f"Model run-a trained on {len(built.models['run-a'])} images",
         "lineage/dagster_run", "11111111-aaaa", "train-0-000000"], timeout=60)
    browser.screenshot(artifacts_dir / "ui_model_lineage.png")

    # And the model's upstream chain on its lineage tab.
    browser.goto(f"{base}/assets/trained_model?view=lineage&lineageDepth=3")
    browser.wait_for_text(CHAIN, timeout=60)
    browser.screenshot(artifacts_dir / "ui_model_upstream.png")
    for name in ("ui_asset_graph", "ui_cell_partitions", "ui_model_lineage",
                 "ui_model_upstream"):
        assert (artifacts_dir / f"{name}.png").stat().st_size > 10_000


def test_project_definitions_render_in_the_catalog(chromium, browser, tmp_path, artifacts_dir):
    """The real code location (pipeline.definitions, demo deployment) loads in the UI and
    its catalog lists every asset of the project."""
    from pipeline.definitions import build_definitions

    names = sorted(k.to_user_string() for k in
                   build_definitions("demo").resolve_all_asset_keys())
    assert {"mapillary_images", "image_manifest", "trained_model"} <= set(names)
    home = tmp_path / "project_home"
    home.mkdir()
    with _webserver(home, ["-m", "pipeline.definitions"], tmp_path / "project.log",
                    GEOSCOUT_DEPLOYMENT="demo",
                    GEOSCOUT_DATA_ROOT=str(tmp_path / "data")) as base:
        browser.goto(f"{base}/server_info")
        browser.js(DISMISS_NUX)
        browser.viewport(1600, 2400)  # the catalog table draws only the rows in view
        browser.goto(f"{base}/assets")
        browser.wait_for_text(names, timeout=90)
        browser.screenshot(artifacts_dir / "ui_project_catalog.png")
