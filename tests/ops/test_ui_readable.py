"""The Dagster UI explains itself: real assets (crawl cells from the tiny demo world, the
merged manifest, the dataset, a one-epoch CPU model and its evaluation) materialized into an
instance, the project's code location served by ``dagster-webserver``, and Chromium on the
pages a person opens. Each page must show the readable metadata (the crawl run's places tag
on the Runs page, a partition's place and bounds, the manifest's column schema, drop reasons
and coverage map, a level's class map drawn, the dataset card, the model's rounded
validation figures, the report's baseline verdict and its path), and each is kept as a
screenshot in tests/artifacts/ (README "What you will see")."""

from __future__ import annotations

import json
import re
import time
from collections import Counter

import dagster as dg
import pytest

from geo_assets.cell_places import cell_places
from geo_assets.cells import points_to_cells
from geo_assets.storage import DataRoot
from pipeline.assets import dataset as ds
from pipeline.assets import ingest
from pipeline.assets.evaluate import evaluation_report
from pipeline.assets.train import trained_model
from pipeline.partitions import crawl_cells
from pipeline.resources import build_resources
from pipeline.sensors import PLACES_TAG, batch_run_request, places_tags
from tests.pipeline.conftest import CRAWL_LEVEL, TINY_SEED

from .cdp import Chromium
from .ops_data import free_port
from .test_ui_browser import DISMISS_NUX, _webserver

# A number printed with more digits than a person reads (``0.3333333333333333``).
LONG_FLOAT = re.compile(r"(?<![\w.])\d+\.\d{6,}(?![\w.])")
# Open the "[Show Markdown]" of the metadata row named KEY; the dialog's images, once decoded,
# as [naturalWidth, naturalHeight] pairs (null while the dialog or its images are not there).
OPEN_MARKDOWN = """(async () => {
  const key = KEY;
  const row = [...document.querySelectorAll('tr')].find(
    tr => tr.cells.length && tr.cells[0].innerText.trim() === key);
  if (!row) return null;
  const open = [...row.querySelectorAll('a, button')].find(
    e => e.innerText.trim() === '[Show Markdown]');
  if (!open) return null;
  open.click();
  for (let i = 0; i < 40; i++) {
    await new Promise(r => setTimeout(r, 250));
    const imgs = [...document.querySelectorAll('[role=dialog] img')];
    if (imgs.length && imgs.every(im => im.complete && im.naturalWidth > 0))
      return imgs.map(im => [im.naturalWidth, im.naturalHeight]);
  }
  return null;
})()"""
pytestmark = [pytest.mark.browser, pytest.mark.slow]
LEVELS = [1, 3]
# One epoch of the demo's CNN at 32 px on the ~90 training images: seconds on a CPU.
TINY_TRAINING = {"epochs": 1, "image_size": 32, "batch_size": 8, "workers": 0,
                 "device": "cpu", "nproc_per_node": 1, "eval_batch_size": 32}


@pytest.fixture
def browser(chromium, tmp_path):
    b = Chromium(chromium, tmp_path / "chromium-profile", free_port(),
                 tmp_path / "chromium.log")
    yield b
    b.close()


def _settled_text(browser, quiet_s: float = 2.0, timeout: float = 30.0) -> str:
    """The page's text once it stopped changing for ``quiet_s`` (the asset page fills its
    status and history panels after the metadata), so a screenshot shows no placeholders."""
    text, since = browser.text(), time.monotonic()
    deadline = since + timeout
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = browser.text()
        if now != text:
            text, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            break
    return text


def _row_shows(text: str, key: str, value) -> bool:
    """The metadata table shows ``key`` with ``value`` (a number as the UI prints it: 0.25,
    not 0.2500000001; 0 for 0.0) in the row's value cell."""
    shown = str(int(value)) if float(value).is_integer() else repr(float(value))
    return re.search(rf"(^|\n){re.escape(key)}\s[^\n]*\n[\s\S]{{0,60}}?\n"
                     rf"{re.escape(shown)}\n", text) is not None


def _resources(root: DataRoot) -> dict:
    from pipeline.profiles import DEMO_TRAINING

    demo = {"demo_seed": TINY_SEED, "demo_preset": "tiny", "requests_per_s": 0}
    return build_resources({
        "settings": {"data_root": root.url, "region": "world", "crawl_level": CRAWL_LEVEL,
                     "grid_max_level": CRAWL_LEVEL, "sources": ["mapillary"],
                     "images_per_cell": 40},
        "mapillary": demo, "streetview": {**demo, "store_images_acknowledged": True},
        "dataset": {"levels": LEVELS, "min_images": 4, "k_folds": 2, "test_fraction": 0.2,
                    "image_size": 48, "shard_size": 64},
        "training": {**DEMO_TRAINING, **TINY_TRAINING}})


def _cells() -> list[str]:
    from geo_assets.demo.world import generate_world

    lat, lon = generate_world(TINY_SEED, "tiny").image_lat_lon
    return sorted(c for c, _ in Counter(points_to_cells(lat, lon, CRAWL_LEVEL).tolist())
                  .most_common(3))


def _materialize(home, root: DataRoot, cells: list[str]) -> dict[str, dict]:
    """Every asset materialized; the latest metadata of the model and the report."""
    resources = _resources(root)
    everything = [*ingest.CELL_ASSETS, ingest.image_manifest, ds.splits, ds.hierarchy,
                  ds.shards, *ds.dataset_assets(LEVELS), trained_model, evaluation_report]
    with dg.DagsterInstance.from_config(str(home)) as instance:
        instance.add_dynamic_partitions(crawl_cells.name, cells)
        crawl = batch_run_request(cells, 0, places_tags([cells])[0])  # as the sensor asks
        assert dg.materialize(everything, instance=instance, resources=resources,
                              selection=[ingest.mapillary_images], tags=crawl.tags).success
        rest = [a for a in everything if a not in ingest.CELL_ASSETS]
        result = dg.materialize(everything, instance=instance, resources=resources,
                                selection=rest)
        assert result.success
        return {name: {k: v.value for k, v in
                       result.asset_materializations_for_node(name)[0].metadata.items()}
                for name in ("trained_model", "evaluation_report")}


def test_asset_pages_explain_themselves(browser, tmp_path, artifacts_dir):
    cells = _cells()
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    root = DataRoot(str(tmp_path / "data"))
    meta = _materialize(home, root, cells)
    model, report = meta["trained_model"], meta["evaluation_report"]
    place = cell_places(cells[:1])[cells[0]]
    pages = [  # (screenshot, path, texts that must show)
        ("ui_runs_places", "/runs", [f"{PLACES_TAG}: {places_tags([cells])[0][PLACES_TAG]}"]),
        ("ui_cell_partition", f"/assets/mapillary_images?view=partitions&partition={cells[0]}",
         ["place", place.split(",")[0], "bounds", "images_kept"]),
        ("ui_image_manifest", "/assets/image_manifest",
         ["drop_reasons", "coverage_map", "preview", "lat_deg"]),
        ("ui_dataset_level", f"/assets/dataset_level_{LEVELS[-1]}",
         ["class_map", "class_histogram", "train_images"]),
        ("ui_shards_card", "/assets/shards", ["dataset_card", "credit_lines"]),
        ("ui_trained_model", "/assets/trained_model",
         ["lineage/manifest_hash", model["run_folder"], "train_seconds"]),
        ("ui_evaluation_report", "/assets/evaluation_report",
         ["verdict", report["verdict"], "baselines", "report_path", "report.html",
          "report_link", "file://"]),
    ]
    rows = {  # metadata rows whose value the page must show as the asset recorded it
        "ui_trained_model": {k: v for k, v in model.items() if k.startswith("val_top1_")},
        "ui_evaluation_report": {k: report[k] for k in
                                 ("top1_coarsest", f"top1_level_{LEVELS[-1]}", "n_test")},
    }
    with _webserver(home, ["-m", "pipeline.definitions"], tmp_path / "web.log",
                    GEOSCOUT_DEPLOYMENT="demo", GEOSCOUT_DATA_ROOT=root.url) as base:
        browser.goto(f"{base}/server_info")
        browser.js(DISMISS_NUX)
        browser.viewport(1600, 2200)
        for name, path, texts in pages:
            browser.goto(base + path)
            browser.wait_for_text(texts, timeout=90)
            text = _settled_text(browser)
            for key, value in rows.get(name, {}).items():
                assert _row_shows(text, key, value), (key, value)
            assert not LONG_FLOAT.search(text), LONG_FLOAT.findall(text)  # metrics rounded
            assert browser.screenshot(artifacts_dir / f"{name}.png").stat().st_size > 10_000
        # A level's class map, as a person opens it from the metadata table: a drawn image
        browser.goto(f"{base}/assets/dataset_level_{LEVELS[-1]}")
        browser.wait_for_text(["class_map", "[Show Markdown]"], timeout=90)
        _settled_text(browser)
        sizes = browser.js(OPEN_MARKDOWN.replace("KEY", json.dumps("class_map")))
        assert sizes and all(w > 200 and h > 100 for w, h in sizes), sizes
        browser.screenshot(artifacts_dir / "ui_dataset_level_class_map.png")
