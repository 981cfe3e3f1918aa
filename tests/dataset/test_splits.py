"""Splits: no capture group and no close pair on two sides, proportions within tolerance on
real, skewed data; deterministic; incremental."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from geo_assets.errors import InputError
from geo_assets.settings import SplitSettings
from geo_assets.sphere import haversine_km
from geo_assets.split_checks import find_leaks, proportions
from geo_assets.splits import build_splits, make_splits
from tests.conftest import shared_data_path
from tests.dataset.helpers import (
    croatia_table,
    demo_world_rows,
    mp16_authors_table,
    streetscapes_table,
)


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
    assert leaks["groups_crossing"] == 0 and leaks["images_near_other_split"] == 0, leaks


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
    assert both.height == old.splits.height and report["incremental"]
    assert both.filter((pl.col("split") != pl.col("split_new"))
                       | (pl.col("fold") != pl.col("fold_new"))).height == 0
    placed = new.splits.height + new.excluded.height
    assert placed == streetscapes.height
    kept = streetscapes.join(new.excluded, on="image_id", how="anti")
    _assert_no_leaks(new, kept, 1.0)


def test_bad_split_input_is_named(demo_manifest):
    with pytest.raises(InputError, match="no kept images"):
        make_splits(demo_manifest.head(0), SplitSettings())
    with pytest.raises(InputError, match="k_folds=5 needs images in at least 6"):
        make_splits(demo_manifest.head(4), SplitSettings(k_folds=5))
    with pytest.raises(InputError, match="test_fraction"):
        SplitSettings(test_fraction=1.5)


# --- proportions and leakage on real, skewed collections ---------------------------------------

@pytest.fixture(scope="module")
def mp16():
    return mp16_authors_table(shared_data_path("coords", "geoclip_mp16_coordinates_100K.csv"))


def _brute_force_leaks(result, manifest, km, sample=400, seed=0) -> int:
    """Images of a random sample with an image of another bucket closer than ``km``, by
    computing every distance (no KD-tree)."""
    t = _joined(result, manifest).with_columns(
        bucket=pl.when(pl.col("split") == "test").then(0).otherwise(pl.col("fold") + 1))
    lat, lon, bucket = (t[c].to_numpy() for c in ("lat_deg", "lon_deg", "bucket"))
    rows = np.random.default_rng(seed).choice(t.height, min(sample, t.height), replace=False)
    leaks = 0
    for chunk in np.array_split(rows, max(1, len(rows) // 50)):
        d = haversine_km(lat[chunk, None], lon[chunk, None], lat[None], lon[None])
        leaks += int(((d < km) & (bucket[None] != bucket[chunk, None])).any(axis=1).sum())
    return leaks


def _assert_proportions(result, manifest, settings):
    report = proportions(_joined(result, manifest).join(
        manifest.select("image_id"), on="image_id"), settings)
    shares = np.array(report["image_share"])
    target = np.array(report["target_share"])
    assert (np.abs(shares - target) <= settings.size_tolerance * target).all(), report


def test_mp16_authors_split_in_proportion_without_leaks(mp16):
    """100K real Flickr locations, authors of realistic skew (largest ~1%, 3% travel)."""
    settings = SplitSettings()
    result = make_splits(mp16, settings)
    _assert_proportions(result, mp16, settings)
    assert result.splits.height + result.excluded.height == mp16.height
    assert result.excluded.height < 0.15 * mp16.height  # the buffer costs little
    assert result.excluded["reason"].str.starts_with("within min_distance_km").all()
    _assert_no_leaks(result, mp16, settings.min_distance_km)
    assert _brute_force_leaks(result, mp16, settings.min_distance_km) == 0
    largest = result.splits.group_by("leak_group").len()["len"].max()
    assert largest < 0.3 * settings.test_fraction * mp16.height  # no block swallows the data


def test_streetscapes_sequences_split_in_proportion(streetscapes):
    settings = SplitSettings()
    result = make_splits(streetscapes, settings)
    _assert_proportions(result, streetscapes, settings)
    assert _brute_force_leaks(result, streetscapes, 1.0, sample=2000) == 0


def test_demo_world_split_in_proportion(demo_manifest):
    settings = SplitSettings(k_folds=3, test_fraction=0.2, size_tolerance=0.3)
    result = make_splits(demo_manifest, settings)
    _assert_proportions(result, demo_manifest, settings)
    assert _brute_force_leaks(result, demo_manifest, 1.0, sample=demo_manifest.height) == 0


def test_one_author_holding_half_the_data_is_warned(mp16):
    """A capture group cannot be split: when one holds half the photos, the proportions
    cannot hold, and the report says so instead of passing silently."""
    skewed = mp16.head(20_000).with_columns(group_id=pl.when(
        pl.int_range(pl.len()) % 2 == 0).then(pl.lit("prolific")).otherwise("group_id"))
    settings = SplitSettings()
    result = make_splits(skewed, settings)
    report = proportions(_joined(result, skewed), settings)
    assert not report["within_tolerance"]
    assert any("of the images" in w for w in report["warnings"])
    _assert_no_leaks(result, skewed, settings.min_distance_km)
