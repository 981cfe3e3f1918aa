"""The maps as a person opens them, in headless Chromium with the network switched off (as on
an offline GPU cluster): the interactive class map and the report's predictions map draw
Leaflet's vector layers from the inlined Leaflet, and a report-like page with the static
PNG maps shows real pixels. Screenshots go to tests/artifacts/."""

from __future__ import annotations

import html
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from geo_assets import mapviz, plots

from .cdp import Chromium
from .ops_data import free_port

pytestmark = [pytest.mark.browser]

LEAFLET_STATE = """(() => ({
  leaflet: typeof L !== 'undefined' && !!L.version,
  panes: document.querySelectorAll('.leaflet-map-pane').length,
  paths: document.querySelectorAll('.leaflet-overlay-pane path').length,
  tiles: document.querySelectorAll('img.leaflet-tile-loaded').length,
  remote: [...document.querySelectorAll('script[src],link[href]')]
            .map(e => e.src || e.href).filter(u => /^https?:/.test(u)),
}))()"""
# Every <img>: loaded, its size, and how many distinct colours a canvas copy of it holds.
IMAGE_STATE = """(() => [...document.images].map(img => {
  const c = document.createElement('canvas');
  c.width = img.naturalWidth; c.height = img.naturalHeight;
  const ctx = c.getContext('2d');
  if (!img.complete || !img.naturalWidth) return {alt: img.alt, loaded: false, colours: 0};
  ctx.drawImage(img, 0, 0);
  const d = ctx.getImageData(0, 0, c.width, c.height).data, seen = new Set();
  for (let i = 0; i < d.length; i += 4 * 97) seen.add((d[i] << 16) | (d[i+1] << 8) | d[i+2]);
  return {alt: img.alt, loaded: true, colours: seen.size};
}))()"""


@pytest.fixture
def offline_browser(chromium, tmp_path):
    b = Chromium(chromium, tmp_path / "profile", free_port(), tmp_path / "chromium.log")
    b.call("Network.enable")
    b.call("Network.emulateNetworkConditions", offline=True, latency=0,
           downloadThroughput=-1, uploadThroughput=-1)
    b.call("Network.setBlockedURLs", urls=["http://*", "https://*"])
    yield b
    b.close()


def _wait(browser: Chromium, expression: str, ok, timeout: float = 30.0):
    deadline, value = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        value = browser.js(expression)
        if ok(value):
            return value
        time.sleep(0.3)
    pytest.fail(f"page never got ready: {value}")


def _classes_table() -> pl.DataFrame:
    return pl.DataFrame({"class_index": [0, 1, 2, 3], "cell_id": ["3", "30", "31", "02"],
                         "cell_level": [1, 2, 2, 2], "n_images": [40, 25, 30, 12],
                         "n_train": [30, 20, 24, 9]})


def test_interactive_maps_draw_offline(offline_browser, tmp_path, artifacts_dir):
    pages = {
        "map_classes_offline": mapviz.classes_map_html(_classes_table(), 2),
        "map_predictions_offline": mapviz.predictions_map_html(
            [45.8, 48.9, -23.5], [16.0, 2.35, -46.6], [46.1, 50.1, -22.9],
            [15.2, 8.7, -43.2], ["Zagreb: 60 km", "Paris: 440 km", "Sao Paulo: 350 km"]),
    }
    for name, data in pages.items():
        path = tmp_path / f"{name}.html"
        path.write_bytes(data)
        offline_browser.goto(path.as_uri())
        state = _wait(offline_browser, LEAFLET_STATE,
                      lambda s: s and s["leaflet"] and s["paths"] > 10)
        assert state["panes"] == 1 and state["remote"] == []
        assert state["tiles"] == 0  # nothing came from a tile server: the land is vector
        shot = offline_browser.screenshot(artifacts_dir / f"{name}.png")
        pixels = np.asarray(__import__("PIL.Image").Image.open(shot).convert("RGB"))
        assert len(np.unique(pixels.reshape(-1, 3)[::37], axis=0)) > 20, name


def _report_like_page() -> str:
    """A page like the evaluation report and ``predict``'s: static PNG maps inlined."""
    figures = {
        "predictions": mapviz.predictions_png([45.8, 48.9], [16.0, 2.35], [46.1, 50.1],
                                              [15.2, 8.7]),
        "classes": mapviz.classes_png(_classes_table(), 2),
        "predict": mapviz.prediction_png(45.8, 16.0, ["320010", "32001"], [0.6, 0.3]),
    }
    body = "".join(f"<h2>{html.escape(k)}</h2>{plots.png_markdown(v, k)}" for k, v in
                   figures.items())
    # the markdown image syntax -> <img>, as the report and the Dagster UI render it
    import re

    body = re.sub(r"!\[([^\]]*)\]\(([^)]*)\)", r'<img alt="\1" src="\2">', body)
    return f"<!DOCTYPE html><html><body><h1>report</h1>{body}</body></html>"


def test_static_maps_show_in_a_page_offline(offline_browser, tmp_path, artifacts_dir):
    path = tmp_path / "report_like.html"
    path.write_text(_report_like_page())
    offline_browser.goto(path.as_uri())
    images = _wait(offline_browser, IMAGE_STATE,
                   lambda v: v and len(v) == 3 and all(i["loaded"] for i in v))
    assert {i["alt"] for i in images} == {"predictions", "classes", "predict"}
    assert all(i["colours"] > 5 for i in images), images  # land, sea, cells, points
    offline_browser.screenshot(artifacts_dir / "map_static_report_offline.png")


def test_a_cdn_page_stays_blank_offline(offline_browser, tmp_path):
    """The control: the same map linking Leaflet from a CDN (folium's default) gets no
    Leaflet here, so the checks above would catch a map that needs the network."""
    import folium

    path = tmp_path / "cdn.html"
    path.write_text(folium.Map(location=(20, 0), zoom_start=2).get_root().render())
    offline_browser.goto(path.as_uri())
    time.sleep(2.0)
    state = offline_browser.js(LEAFLET_STATE)
    assert not state["leaflet"] and state["paths"] == 0
    assert Path(path).exists()


def test_real_report_and_predict_page_draw_offline(offline_browser, tmp_path, artifacts_dir,
                                                   shared_data):
    """The evaluation report and ``geoscout predict --html`` of a model trained on the tiny
    dataset, opened with the network off: the report's static maps show real pixels and the
    predict page draws Leaflet's vector land and its marker."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training"))
    from tiny_dataset import build_tiny_dataset, train_tiny_model

    from training.evaluate import evaluate_run
    from training.predict import cli as predict_cli

    dataset = tmp_path / "tiny"
    build_tiny_dataset(dataset / "datasets")
    model = train_tiny_model(dataset, tmp_path / "model")
    evaluate_run(model, dataset / "datasets" / "dataset.json", tmp_path / "report",
                 batch_size=32, workers=0, device="cpu", gradcam_images=2, nn_baseline=False)
    offline_browser.goto((tmp_path / "report" / "report.html").as_uri())
    # file:// images taint a canvas, so the browser says loaded + size and Python counts colours
    loaded = """(() => [...document.images].map(i => ({alt: i.alt, src: i.getAttribute('src'),
        loaded: i.complete && i.naturalWidth > 0})))()"""
    images = _wait(offline_browser, loaded, lambda v: v and all(i["loaded"] for i in v))
    maps = [i for i in images if "predictions" in i["alt"]]
    assert maps, images
    from PIL import Image

    for m in maps:
        pixels = np.asarray(Image.open(tmp_path / "report" / m["src"]).convert("RGB"))
        assert len(np.unique(pixels.reshape(-1, 3)[::7], axis=0)) > 5, m
    offline_browser.screenshot(artifacts_dir / "report_offline.png")

    photo = min(shared_data("real", "croatia_streetview", "images").glob("*.jpg"))
    page = tmp_path / "predict.html"
    assert predict_cli([str(photo), "--model", str(model), "--html", str(page)]) == 0
    offline_browser.goto(page.as_uri())
    state = _wait(offline_browser, LEAFLET_STATE, lambda s: s and s["leaflet"] and s["paths"])
    assert state["remote"] == [] and state["tiles"] == 0
    offline_browser.screenshot(artifacts_dir / "predict_offline.png")
