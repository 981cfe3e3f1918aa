"""Splits: no capture group and no close pair on two sides; deterministic; incremental."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from geo_assets.errors import InputError
from geo_assets.settings import SplitSettings
from geo_assets.sphere import chord_to_km, unit_vectors
from geo_assets.splits import build_splits, close_pairs, find_leaks, make_splits
from tests.conftest import shared_data_path
from tests.dataset.helpers import croatia_table, demo_world_rows, streetscapes_table


@pytest.fixture(scope="module")
def demo_manifest():
    rows = [r for r in demo_world_rows(None) if r["kept"]]
    return pl.DataFrame(rows).select("image_id", "source", "group_id", "lat_deg", "lon_deg")


@pytest.fixture(scope="module")
def streetscapes():
    return streetscapes_table(shared_data_path("coords", "global_streetscapes_dataset1_info.csv"))


def _joined(result, manifest):
    return result.splits.join(manifest.select("image_id", "source", "lat_deg", "lon_deg"),
                              on="image_id")


def _assert_no_leaks(result, manifest, km):
    leaks = find_leaks(_joined(result, manifest), km)
    assert leaks["groups_crossing"] == 0 and leaks["close_pairs_crossing"] == 0, leaks


def test_demo_world_splits_without_leaks(demo_manifest):
    settings = SplitSettings(k_folds=3, test_fraction=0.2)
    result = make_splits(demo_manifest, settings)
    assert result.splits.height == demo_manifest.height and result.excluded.height == 0
    assert set(result.splits["fold"]) == {-1, 0, 1, 2}
    _assert_no_leaks(result, demo_manifest, settings.min_distance_km)
    panos = result.splits.filter(pl.col("image_id").str.starts_with("streetview:"))
    assert (panos.group_by("group_id").agg(pl.col("fold").n_unique())["fold"] == 1).all()


def test_real_sequences_never_cross(streetscapes):
    settings = SplitSettings()
    result = make_splits(streetscapes, settings)
    _assert_no_leaks(result, streetscapes, 1.0)
    sizes = result.splits.group_by("split").len().sort("split")["len"].to_list()
    assert 0.05 < sizes[0] / streetscapes.height < 0.2  # test share near 10 %
    # a stricter distance only merges more: still no pair within 5 km on two sides
    _assert_no_leaks(make_splits(streetscapes, SplitSettings(min_distance_km=5)),
                     streetscapes, 5.0)


def test_croatia_headings_stay_together_by_place_alone():
    """Four headings per place, with no group id: their shared position groups them."""
    table = croatia_table(shared_data_path("real", "croatia_streetview")).with_columns(
        group_id=pl.lit(None, pl.String))
    result = make_splits(table, SplitSettings(min_distance_km=0.01, test_fraction=0.2))
    place = result.splits.join(table.select("image_id", "lat_deg", "lon_deg"), on="image_id")
    per_place = place.group_by("lat_deg", "lon_deg").agg(
        n=pl.len(), splits=pl.col("split").n_unique(), folds=pl.col("fold").n_unique())
    assert (per_place["n"] == 4).all() and per_place.height == 200
    assert (per_place["splits"] == 1).all() and (per_place["folds"] == 1).all()
    assert result.splits.filter(pl.col("split") == "test").height > 0


def test_deterministic_by_seed_and_row_order(streetscapes):
    settings = SplitSettings(seed=7)
    a = make_splits(streetscapes, settings).splits
    b = make_splits(streetscapes.sample(fraction=1.0, shuffle=True, seed=1), settings).splits
    assert a.equals(b)
    c = make_splits(streetscapes, SplitSettings(seed=8)).splits
    assert not a["fold"].equals(c["fold"])


def test_stratified_by_coarsest_cell(streetscapes):
    result = make_splits(streetscapes, SplitSettings(stratify_level=1))
    t = _joined(result, streetscapes).with_columns(
        q=(pl.col("lat_deg") >= 0).cast(pl.Int8) * 2 + (pl.col("lon_deg") >= 0).cast(pl.Int8))
    share = t.group_by("q").agg(test=(pl.col("split") == "test").mean(), n=pl.len())
    big = share.filter(pl.col("n") > 500)
    assert big.height >= 2 and big["test"].is_between(0.04, 0.2).all()


def test_incremental_keeps_old_assignments(streetscapes, tmp_path):
    settings = SplitSettings()
    old, _, _ = build_splits(streetscapes.head(4000), settings, tmp_path)
    new, report, _ = build_splits(streetscapes, settings, tmp_path)
    both = old.splits.join(new.splits, on="image_id", suffix="_new")
    assert both.height == 4000 and report["incremental"]
    assert both.filter((pl.col("split") != pl.col("split_new"))
                       | (pl.col("fold") != pl.col("fold_new"))).height == 0
    placed = new.splits.height + new.excluded.height
    assert placed == streetscapes.height
    kept = streetscapes.join(new.excluded, on="image_id", how="anti")
    _assert_no_leaks(new, kept, 1.0)


def test_bad_split_input_is_named(demo_manifest):
    with pytest.raises(InputError, match="no kept images"):
        make_splits(demo_manifest.head(0), SplitSettings())
    with pytest.raises(InputError, match="k_folds=5 needs at least 6"):
        make_splits(demo_manifest.head(4), SplitSettings(k_folds=5))
    with pytest.raises(InputError, match="test_fraction"):
        SplitSettings(test_fraction=1.5)


def test_close_pairs_match_brute_force():
    rng = np.random.default_rng(0)
    lat = 45 + rng.random(300) * 0.1
    lon = 16 + rng.random(300) * 0.1
    lat[:3] = lat[3]  # identical points collapse but still pair up
    lon[:3] = lon[3]
    xyz = unit_vectors(lat, lon)
    got = {tuple(sorted(p)) for p in close_pairs(xyz, 1.0).tolist()}
    d = chord_to_km(np.linalg.norm(xyz[:, None] - xyz[None], axis=2))
    i, j = np.nonzero(np.triu(d < 1.0, 1))
    # close_pairs may link through identical points instead of directly: compare components
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    def comps(pairs):
        p = np.array(sorted(pairs)).reshape(-1, 2)
        g = coo_matrix((np.ones(len(p)), (p[:, 0], p[:, 1])), shape=(300, 300))
        return connected_components(g, directed=False)[1]

    a, b = comps(got), comps(set(zip(i.tolist(), j.tolist())))
    assert len(set(zip(a, b))) == len(set(a)) == len(set(b))
