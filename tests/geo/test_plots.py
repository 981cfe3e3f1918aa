"""Every figure in ``geo_assets.plots`` is a real PNG of the expected size with something
drawn on it, and the markdown helpers render what metadata shows."""

from __future__ import annotations

import base64
import io

import numpy as np
import polars as pl
import pytest
from PIL import Image

from geo_assets import plots


def decoded(png: bytes, size: tuple[int, int]) -> np.ndarray:
    """The PNG as an RGB array; asserts the signature, the size and that it is not blank."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    image = Image.open(io.BytesIO(png))
    image.load()
    assert image.size == size
    pixels = np.asarray(image.convert("RGB"))
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 10  # more than a blank canvas
    return pixels


def has_colour(pixels: np.ndarray, rgb: tuple[int, int, int], tol: int = 40) -> bool:
    return bool((np.abs(pixels.reshape(-1, 3).astype(int) - rgb).sum(axis=1) < tol).any())


TAB_BLUE = (31, 119, 180)  # matplotlib's first cycle colour


def test_class_histogram_png_one_panel_per_level():
    png = plots.class_histogram_png({1: [40, 12, 9, 30], 3: np.arange(1, 20)})
    pixels = decoded(png, (720, 270))  # 4 x 3 in per level at 90 dpi
    assert has_colour(pixels, TAB_BLUE)


def test_leakage_png():
    per_split = pl.DataFrame({"split": ["test", "train", "train"], "fold": [-1, 0, 1],
                              "images": [50, 80, 70], "leakage_groups": [10, 16, 14]})
    km = np.array([0.5, 3.0, 12.0, np.inf, 250.0])
    pixels = decoded(plots.leakage_png(km, per_split, 1.0), (810, 270))
    assert has_colour(pixels, (255, 0, 0))  # the min-distance line


def test_error_histogram_png_and_empty_errors():
    pixels = decoded(plots.error_histogram_png([0.5, 30.0, 800.0, 5000.0], (25.0, 750.0)),
                     (660, 385))
    assert has_colour(pixels, (59, 117, 175))
    decoded(plots.error_histogram_png([]), (660, 385))


def test_reliability_png():
    bins = [[10, 1.0, 2], [10, 3.0, 4], [10, 5.0, 5], [10, 7.0, 8], [0, 0.0, 0]]
    pixels = decoded(plots.reliability_png(bins, bins, "1"), (880, 396))
    assert has_colour(pixels, (106, 168, 79))


@pytest.mark.parametrize("n", [4, 30])  # labelled, and too many classes to label
def test_confusion_png(n):
    matrix = np.eye(n) * 50  # row-normalised: 1 on the diagonal
    pixels = decoded(plots.confusion_png(matrix.tolist(), [f"c{i}" for i in range(n)], "2"),
                     (550, 495))
    assert has_colour(pixels, (8, 48, 107))  # the dark end of Blues on the diagonal


def test_gradcam_grid_png_and_overlay():
    rgb = np.full((32, 32, 3), 0.5)
    heat = np.tile(np.linspace(0, 1, 32), (32, 1))
    over = plots.heatmap_overlay(rgb, heat)
    assert over.shape == (32, 32, 3) and 0.0 <= over.min() and over.max() <= 1.0
    assert not np.allclose(over[:, 0], over[:, -1])  # the heat shows
    decoded(plots.gradcam_grid_png([over] * 4, ["a", "b", "c", "d"]), (1320, 352))
    decoded(plots.gradcam_grid_png([over] * 5, list("abcde")), (1320, 704))


def test_png_markdown_round_trips():
    png = plots.error_histogram_png([10.0])
    markdown = plots.png_markdown(png, "errors")
    assert markdown.startswith("![errors](data:image/png;base64,")
    assert base64.b64decode(markdown.split(",", 1)[1].rstrip(")")) == png


def test_markdown_table():
    assert plots.markdown_table(["a", "b"], [(1, 2)]) == "| a | b |\n| --- | --- |\n| 1 | 2 |"
    text = plots.markdown_table(["cell", "n"], [("0", 1), ("1", 2), ("2", 3)], limit=2,
                                align="lr")
    assert text.splitlines() == ["| cell | n |", "| --- | ---: |", "| 0 | 1 |", "| 1 | 2 |",
                                 "| ... 1 more | |"]
