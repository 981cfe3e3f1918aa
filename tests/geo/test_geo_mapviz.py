"""Map helpers produce real PNGs and self-contained HTML maps."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import polars as pl
from PIL import Image

from geo_assets import mapviz
from geo_assets.naturalearth import embedded_land

BOUNDS = np.array([[10.0, 40.0, 20.0, 50.0], [-60.0, -20.0, -50.0, -10.0]])


def has_colour(pixels: np.ndarray, rgb: tuple[int, int, int], tol: int = 60) -> bool:
    return bool((np.abs(pixels.reshape(-1, 3).astype(int) - rgb).sum(axis=1) < tol).any())


def rgb_png(png: bytes, size: tuple[int, int]) -> np.ndarray:
    image = Image.open(io.BytesIO(png)).convert("RGB")
    assert image.size == size
    return np.asarray(image)


def test_boxes_png_draws_the_boxes():
    colours = [mapviz.STATUS_COLOURS["land"], mapviz.STATUS_COLOURS["dropped"]]
    png = mapviz.boxes_png(BOUNDS, colours, land=embedded_land(), title="t",
                           legend=mapviz.STATUS_COLOURS, size_px=(400, 220))
    image = Image.open(io.BytesIO(png)).convert("RGB")
    assert image.size == (400, 220)
    pixels = np.asarray(image).reshape(-1, 3)
    assert has_colour(pixels, (198, 40, 40))  # the red-ish dropped box


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


def test_land_png_draws_grey_land_in_the_region():
    pixels = rgb_png(mapviz.land_png(embedded_land(), (-30.0, 30.0, 40.0, 70.0), title="eu",
                                     size_px=(400, 300)), (400, 300))
    assert has_colour(pixels, (217, 217, 217), tol=10)


# two kept level-2 cells and one dropped one, as GridResult holds them
CELLS = pd.DataFrame({"cell_id": ["00", "01", "2"], "level": [2, 2, 1],
                      "status": ["land", "coastal", "land"], "land_fraction": [1.0, 0.25, 0.7]})
DROPPED = pd.DataFrame({"cell_id": ["03", "3"], "level": [2, 1]})


def test_grid_png_colours_cells_by_status():
    pixels = rgb_png(mapviz.grid_png(CELLS, DROPPED, 2, embedded_land()), (1000, 520))
    for status in ("land", "coastal", "dropped"):
        colour = mapviz.STATUS_COLOURS[status].lstrip("#")
        assert has_colour(pixels, tuple(int(colour[i:i + 2], 16) for i in (0, 2, 4)), tol=90)


def test_grid_map_html_lists_the_level_with_statuses():
    html = mapviz.grid_map_html(CELLS, DROPPED, 2).decode()
    assert "00 land land 100%" in html and "01 coastal land 25%" in html
    assert "03 dropped land 0%" in html and "grid level 2: 2 cells kept, 1 dropped" in html
    assert "2 land land 70%" not in html  # other levels stay off the map


def test_grid_map_level_picks_the_deepest_level_that_fits():
    counts = pd.DataFrame({"level": [1, 2, 3], "kept": [3, 10, 50], "dropped": [1, 6, 30]})
    assert mapviz.grid_map_level(counts, 3) == 3
    assert mapviz.grid_map_level(counts, 3, max_cells=20) == 2
    assert mapviz.grid_map_level(counts, 1, max_cells=2) == 1


def test_classes_map_html():
    table = pl.DataFrame({"cell_id": ["", "01"], "cell_level": [0, 2], "class_index": [0, 1],
                          "n_images": [40, 12], "n_train": [30, 9]})
    html = mapviz.classes_map_html(table, 2).decode()
    assert "class 1: cell \\u002701\\u0027 (12 images, 9 train)" in html  # JSON-escaped quotes
    assert "classes at level 2" in html and mapviz.CLASS_PALETTE[1] in html


def test_predictions_map_html_links_truth_to_prediction():
    html = mapviz.predictions_map_html([45.8], [16.0], [48.1], [11.6], ["img<1>: 480 km"])
    text = html.decode()
    assert "img&lt;1&gt;: 480 km" in text and "<b>predictions vs truth</b>" in text
    assert "45.8" in text and "11.6" in text
