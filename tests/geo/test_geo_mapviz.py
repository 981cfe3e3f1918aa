"""Map helpers produce real PNGs and self-contained HTML maps."""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image

from geo_assets import mapviz
from geo_assets.naturalearth import embedded_land

BOUNDS = np.array([[10.0, 40.0, 20.0, 50.0], [-60.0, -20.0, -50.0, -10.0]])


def test_boxes_png_draws_the_boxes():
    colours = [mapviz.STATUS_COLOURS["land"], mapviz.STATUS_COLOURS["dropped"]]
    png = mapviz.boxes_png(BOUNDS, colours, land=embedded_land(), title="t",
                           legend=mapviz.STATUS_COLOURS, size_px=(400, 220))
    image = Image.open(io.BytesIO(png)).convert("RGB")
    assert image.size == (400, 220)
    pixels = np.asarray(image).reshape(-1, 3)
    assert (np.abs(pixels.astype(int) - [198, 40, 40]).sum(axis=1) < 60).any()  # red-ish box
    markdown = mapviz.png_markdown(png, "grid")
    assert base64.b64decode(markdown.split(",", 1)[1].rstrip(")")) == png


def test_points_png():
    png = mapviz.points_png([45.8, -15.8], [16.0, -47.9], ["red", "blue"], size_px=(300, 160))
    assert Image.open(io.BytesIO(png)).size == (300, 160)


def test_boxes_map_html_has_tooltips_and_legend():
    fmap = mapviz.boxes_map(BOUNDS, ["#2e7d32", "#c62828"], tooltips=["cell A", "cell B"],
                            title="grid", legend={"land": "#2e7d32"})
    html = mapviz.map_html(fmap).decode()
    assert "cell A" in html and "cell B" in html and "#c62828" in html
    assert "<b>grid</b>" in html


def test_points_map_html():
    html = mapviz.map_html(mapviz.points_map([45.8], [16.0], ["red"], tooltips=["Zagreb"]))
    assert b"Zagreb" in html


def test_extent_of_pads_and_clamps():
    assert mapviz.extent_of(BOUNDS, 1.0) == (-61.0, -21.0, 21.0, 51.0)
    assert mapviz.extent_of(np.array([[-180, -90, 180, 90]])) == (-180, -90, 180, 90)
    assert mapviz.extent_of(np.zeros((0, 4))) == (-180, -90, 180, 90)
