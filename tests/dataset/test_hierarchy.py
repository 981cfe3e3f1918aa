"""Hierarchy: nested classes per level, at least min_images training images each."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from geo_assets import layout
from geo_assets.cells import points_to_cells
from geo_assets.errors import InputError
from geo_assets.hierarchy import assign_labels, fit_hierarchy, write_hierarchy
from geo_assets.settings import HierarchySettings
from tests.conftest import shared_data_path


@pytest.fixture(scope="module")
def mp16():
    """20,000 real photo positions (MP-16), heavily clustered, 90 % train."""
    c = pl.read_csv(shared_data_path("coords", "geoclip_mp16_coordinates_100K.csv")).head(20000)
    train = np.random.default_rng(0).random(c.height) < 0.9
    return c["LAT"].to_numpy(), c["LON"].to_numpy(), train


def _check_structure(h, train, min_images):
    for prev, level in zip((None, *h.levels), h.levels):
        t = h.tables[level]
        assert t["class_index"].to_list() == list(range(t.height))
        assert (t["n_train"] >= min_images).all()
        assert (h.labels[level] >= 0).all()
        assert (t["cell_level"] <= level).all()
        assert np.bincount(h.labels[level][train], minlength=t.height).tolist() == \
            t["n_train"].to_list()
        parents = t["parent_class_index"].to_numpy()[h.labels[level]]
        if prev is None:
            assert (parents == -1).all()
        else:  # nested: each image's parent class is its class at the previous level
            assert (parents == h.labels[prev]).all()
        assert t.group_by("parent_class_index").agg(pl.col("is_remainder").sum())[
            "is_remainder"].to_list() == [1] * t["parent_class_index"].n_unique()


def test_fixed_levels_on_real_positions(mp16):
    lat, lon, train = mp16
    settings = HierarchySettings(levels=(1, 3, 5, 8), min_images=25)
    h = fit_hierarchy(lat, lon, train, settings)
    _check_structure(h, train, 25)
    assert [h.tables[lv].height for lv in h.levels] == sorted(h.tables[lv].height
                                                                for lv in h.levels)
    deep = h.tables[8].filter(pl.col("cell_level") == 8)
    assert deep.height > 50  # dense places get their own level-8 cells
    # a full-depth class holds exactly the images of its cell (no merged remainder there)
    cells = points_to_cells(lat, lon, 8)
    for row in deep.filter(~pl.col("is_remainder")).head(20).iter_rows(named=True):
        inside = cells == row["cell_id"]
        assert (h.labels[8][inside] == row["class_index"]).all()
    again = assign_labels(h, lat, lon)  # new points are labelled like the fitted ones
    assert all((again[lv] == h.labels[lv]).all() for lv in h.levels)


def test_adaptive_mode_splits_only_dense_cells(mp16):
    lat, lon, train = mp16
    settings = HierarchySettings(levels=(2, 6, 10), min_images=20, max_images=300)
    h = fit_hierarchy(lat, lon, train, settings)
    _check_structure(h, train, 20)
    t = h.tables[10]
    parents = h.tables[6]
    # a level-10 class deeper than its parent's cell exists only where the parent was dense
    split = t.join(parents.select(parent_class_index="class_index", p_train="n_train",
                                  p_level="cell_level"), on="parent_class_index")
    assert (split.filter(pl.col("cell_level") > pl.col("p_level"))["p_train"] > 300).all()


def test_sparse_cells_merge_into_parent_class():
    rng = np.random.default_rng(1)
    dense = (45.1 + rng.random(60) * 0.01, 16.1 + rng.random(60) * 0.01)  # one level-8 cell
    sparse = (44.0 + rng.random(5) * 0.3, 17.5 + rng.random(5) * 0.3)     # too few elsewhere
    lat, lon = np.concatenate([dense[0], sparse[0]]), np.concatenate([dense[1], sparse[1]])
    h = fit_hierarchy(lat, lon, np.ones(65, bool), HierarchySettings(levels=(1, 8),
                                                                      min_images=10))
    t = h.tables[8]
    assert t.height == 1  # the 5 sparse images join the only class of their parent
    assert (h.labels[8] == 0).all() and t["n_train"][0] == 65 and t["is_remainder"][0]


def test_deterministic_and_written(tmp_path, mp16):
    lat, lon, train = mp16
    settings = HierarchySettings(levels=(1, 4), min_images=30)
    a, b = fit_hierarchy(lat, lon, train, settings), fit_hierarchy(lat, lon, train, settings)
    assert all(a.tables[lv].equals(b.tables[lv]) for lv in a.levels)
    ids = [f"img{i}" for i in range(len(lat))]
    write_hierarchy(a, settings, ids, lat, lon, tmp_path)
    meta = json.loads((tmp_path / layout.LEVELS_META_FILE).read_text())
    assert meta["levels"] == [1, 4] and meta["num_classes"]["4"] == a.tables[4].height
    children = json.loads((tmp_path / layout.children_file(4)).read_text())
    assert sum(len(c) for c in children["children"].values()) == a.tables[4].height
    labels = pl.read_parquet(tmp_path / layout.LABELS_FILE)
    assert labels["label_4"].to_list() == a.labels[4].tolist()
    assert pl.read_parquet(tmp_path / layout.level_table_file(4)).equals(a.tables[4])


@pytest.mark.parametrize("kwargs, match", [
    ({"levels": (3, 1)}, "strictly increasing"),
    ({"levels": ()}, "empty"),
    ({"levels": (1, 30)}, "1..24"),
    ({"min_images": 0}, "min_images"),
    ({"min_images": 10, "max_images": 5}, "max_images"),
])
def test_bad_settings_are_named(kwargs, match):
    with pytest.raises(InputError, match=match):
        HierarchySettings(**kwargs)


def test_too_few_images_is_named():
    with pytest.raises(InputError, match="fewer than the hierarchy's min_images=20"):
        fit_hierarchy([1.0, 2.0], [3.0, 4.0], [True, True], HierarchySettings(min_images=20))
    with pytest.raises(InputError, match="no training images"):
        fit_hierarchy([1.0], [3.0], [False], HierarchySettings())
