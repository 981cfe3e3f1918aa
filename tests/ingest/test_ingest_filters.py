"""Filters: spatial dedup on the sphere (antimeridian, poles), groups, sequence cap,
perceptual hashes, brightness, and order-independence of the result."""

from __future__ import annotations

import numpy as np
import pytest

from geo_assets import filters
from geo_assets.settings import FilterSettings
from geo_assets.sphere import haversine_km, km_to_chord, unit_vectors


def haversine_m(lat1, lon1, lat2, lon2):
    return 1000.0 * haversine_km(lat1, lon1, lat2, lon2)


def dedup(lat, lon, group=None, distance=20.0):
    n = len(lat)
    group = group if group is not None else [f"g{i}" for i in range(n)]
    return filters.spatial_dedup(np.array(lat, float), np.array(lon, float), group,
                                 np.ones(n, bool), distance)


def test_antimeridian_neighbours_are_duplicates():
    lat, lon = [10.0, 10.0], [179.99995, -179.99995]
    assert haversine_m(10.0, 179.99995, 10.0, -179.99995) < 15
    assert dedup(lat, lon).tolist() == [False, True]


def test_points_near_the_pole_on_opposite_meridians_are_duplicates():
    lat, lon = [89.99990, 89.99990], [0.0, 180.0]  # 22 m apart across the pole
    assert haversine_m(lat[0], lon[0], lat[1], lon[1]) == pytest.approx(22.2, abs=0.5)
    assert dedup(lat, lon, distance=30).tolist() == [False, True]
    assert dedup(lat, lon, distance=15).tolist() == [False, False]


def test_distance_is_metres_not_degrees_at_high_latitude():
    # 0.001 deg of longitude is 111 m at the equator but 9.7 m at 85 deg
    assert dedup([85.0, 85.0], [0.0, 0.001]).tolist() == [False, True]
    assert dedup([0.0, 0.0], [0.0, 0.001]).tolist() == [False, False]


def test_earlier_image_wins_and_chains_are_greedy():
    # three points 15 m apart in a row: the first and third survive (20 m radius)
    step = 15 / 111_195.0
    lat = [0.0, step, 2 * step]
    assert dedup(lat, [0.0] * 3).tolist() == [False, True, False]


def test_headings_of_one_pano_form_one_location():
    lat = [45.0] * 4 + [45.00005]
    lon = [16.0] * 4 + [16.0]
    group = ["pano"] * 4 + ["other"]
    assert dedup(lat, lon, group).tolist() == [False] * 4 + [True]
    # the four views stay together when a neighbour came first
    assert dedup(lat[::-1], lon[::-1], group[::-1]).tolist() == [False] + [True] * 4


def test_blockers_from_neighbouring_cells_always_win():
    dropped = filters.spatial_dedup(np.array([1.0]), np.array([1.0]), ["a"], np.ones(1, bool),
                                    20.0, blockers=(np.array([1.00001]), np.array([1.0])))
    assert dropped.tolist() == [True]


def test_sequence_cap_keeps_k_spread_over_the_sequence():
    group = ["s"] * 10 + ["t"] * 2
    captured = np.arange(12)
    dropped = filters.sequence_cap(group, captured, np.ones(12, bool), k=3)
    kept = np.flatnonzero(~dropped).tolist()
    assert kept == [0, 4, 9, 10, 11] or kept == [0, 5, 9, 10, 11]
    assert filters.sequence_cap(group, captured, np.ones(12, bool), k=0).sum() == 0


def test_near_duplicates_by_perceptual_hash():
    hashes = ["ffff0000ffff0000", "ffff0000ffff0001", "0000ffff0000ffff", "ffff0000ffff0003"]
    dropped = filters.near_duplicates(hashes, np.ones(4, bool), max_distance=2)
    assert dropped.tolist() == [False, True, False, True]
    same_place = filters.near_duplicates(hashes, np.ones(4, bool), 2, units=np.zeros(4))
    assert same_place.tolist() == [False] * 4


def _greedy_near_duplicates(phash, candidate, max_distance, units):
    """The plain O(n^2) greedy, the reference the indexed version must match."""
    dropped = np.zeros(len(candidate), dtype=bool)
    kept: list[int] = []
    for i in np.flatnonzero(candidate):
        if not phash[i]:
            continue
        h = int(phash[i], 16)
        if any((h ^ int(phash[k], 16)).bit_count() <= max_distance and units[k] != units[i]
               for k in kept):
            dropped[i] = True
        else:
            kept.append(i)
    return dropped


@pytest.mark.parametrize("max_distance", [0, 2, 4, 9])
def test_near_duplicates_match_the_plain_greedy_on_random_hashes(max_distance):
    rng = np.random.default_rng(max_distance)
    n = 1500
    base = rng.integers(0, 2**63, 60, dtype=np.int64).astype(np.uint64)
    flips = rng.integers(0, 64, (n, 6)).astype(np.uint64)
    n_flips = rng.integers(0, 7, n)
    hashes = base[rng.integers(0, len(base), n)]
    for j in range(6):
        on = n_flips > j
        hashes[on] ^= np.uint64(1) << flips[on, j]
    phash = [f"{int(h):016x}" for h in hashes]
    phash[5] = ""  # images without a hash are never compared
    candidate = rng.random(n) < 0.9
    units = rng.integers(0, 300, n)
    got = filters.near_duplicates(phash, candidate, max_distance, units)
    want = _greedy_near_duplicates(phash, candidate, max_distance, units)
    assert got.tolist() == want.tolist()
    assert 0 < want.sum() < candidate.sum()  # the data has duplicates and survivors


def test_brightness_bounds():
    reasons = filters.brightness_reasons(np.array([10, 40, 40.5, 128, 240]), FilterSettings())
    assert reasons.tolist() == ["too_dark", "too_dark", "", "", "too_bright"]


def test_cross_cell_dedup_ignores_pairs_inside_one_cell():
    lat = np.array([0.0, 0.00005, 0.0001])
    lon = np.zeros(3)
    blocker = filters.cross_partition_dedup(lat, lon, ["a", "a", "b"], 20.0)
    assert blocker.tolist() == [-1, -1, 0]  # the earliest kept image of cell "a" wins


def test_dedup_is_deterministic_and_thorough_on_random_points():
    rng = np.random.default_rng(0)
    n = 3000
    lat = rng.uniform(-0.01, 0.01, n)
    lon = rng.uniform(179.99, 180.01, n)
    lon = (lon + 180) % 360 - 180
    dropped = dedup(lat, lon, distance=25.0)
    assert dropped.tolist() == dedup(lat, lon, distance=25.0).tolist()
    kept = np.flatnonzero(~dropped)
    vec = unit_vectors(lat[kept], lon[kept])
    from scipy.spatial import KDTree

    assert not KDTree(vec).query_pairs(km_to_chord(25.0 / 1000.0))  # none too close
    for i in np.flatnonzero(dropped)[:200]:  # every drop has a kept point within reach
        assert haversine_m(lat[i], lon[i], lat[kept], lon[kept]).min() <= 25.0 + 1e-6


def test_cell_filters_do_not_depend_on_input_order():
    import random

    from geo_assets.ingest import apply_filters

    rng = np.random.default_rng(5)
    rows = []
    for i in range(400):
        rows.append({
            "image_id": f"mapillary:{i:04d}", "lat_deg": 45 + rng.uniform(0, 0.001),
            "lon_deg": 16 + rng.uniform(0, 0.001), "group_id": f"s{i % 7}",
            "captured_at": int(rng.integers(0, 50)) if i % 5 else None,
            "brightness": float(rng.uniform(20, 250)), "phash": f"{rng.integers(0, 2**63):016x}",
            "sha256": f"{i % 390:064x}", "drop_reason": None, "kept": False})
    outcomes = []
    for seed in (0, 1):
        shuffled = [dict(r) for r in rows]
        random.Random(seed).shuffle(shuffled)
        apply_filters(shuffled, FilterSettings(max_per_sequence=5))
        outcomes.append(sorted((r["image_id"], r["kept"], r["drop_reason"]) for r in shuffled))
    assert outcomes[0] == outcomes[1]
    reasons = {r for _, _, r in outcomes[0]}
    assert {"too_dark", "too_bright", "duplicate_content", "duplicate_location"} <= reasons


def _prolific_folder(tmp_path, n=160):
    """Real Croatia photos as a local folder whose sidecar gives one author 3/4 of the places."""
    import polars as pl

    from tests.conftest import shared_data_path

    folder = shared_data_path("real", "croatia_streetview")
    labels = pl.read_csv(folder / "labels.csv").head(n)
    place = [i // 4 for i in range(labels.height)]  # four headings per place
    authors = ["prolific" if p % 4 else f"visitor{p % 7}" for p in place]
    sidecar = tmp_path / "photos.csv"
    labels.select(file=pl.col("filename"), lat="lat", lon="lon",
                  group=pl.Series(authors)).write_csv(sidecar)  # paths relative to the folder
    return labels, sidecar, folder


def test_local_prolific_author_keeps_photos_and_every_drop_has_a_reason(tmp_path):
    """A local photo group is an author, not a sequence: no cap by default, so the prolific
    author's photos stay; with the cap set they are dropped, each with its reason."""
    import json

    import polars as pl

    from geo_assets import layout
    from geo_assets.cells import points_to_cells
    from geo_assets.clients.local_folder import LocalFolderSource, image_files
    from geo_assets.ingest import ingest_cell
    from geo_assets.local_index import write_folder_part
    from geo_assets.merge import merge_manifests
    from geo_assets.settings import IngestSettings
    from geo_assets.storage import DataRoot

    labels, sidecar, folder = _prolific_folder(tmp_path)
    source = LocalFolderSource(str(folder), sidecar)
    cells = points_to_cells(labels["lat"].to_numpy(), labels["lon"].to_numpy(), 3)
    cell = str(pl.Series(cells).mode()[0])
    in_cell = int((cells == cell).sum())
    results = {}
    for cap in (0, 10):
        root = DataRoot(str(tmp_path / f"root{cap}"))
        settings = IngestSettings(workers=2, filters=FilterSettings(max_per_local_group=cap))
        res = ingest_cell(source, cell, root, settings)
        table = pl.read_parquet(root.local_path(res.manifest_relpath))
        assert table.height == in_cell  # every photo of the cell has a row
        dropped = table.filter(~pl.col("kept"))
        assert dropped["drop_reason"].null_count() == 0
        stats = json.loads(root.read_bytes(res.stats_relpath))
        assert stats["filters"]["max_per_local_group"] == cap
        results[cap] = table
        # the folder's other photos (other cells, no sidecar row) are recorded, not lost
        write_folder_part(root, source, 3)
        merge_manifests(root)
        merged = pl.read_parquet(root.local_path(layout.IMAGE_MANIFEST))
        assert merged.height == merged["image_id"].n_unique() == len(image_files(folder))
        assert merged.filter(~pl.col("kept"))["drop_reason"].null_count() == 0
        assert merged.filter(pl.col("cell_id") == cell).equals(table)
    free = results[0]
    assert free.filter(pl.col("drop_reason") == "sequence_cap").height == 0
    prolific = free.filter(pl.col("group_id") == "prolific")
    assert prolific["kept"].sum() > 0.8 * prolific.height  # no silent 15 % loss
    capped = results[10].filter(pl.col("group_id") == "prolific")
    assert capped["kept"].sum() <= 10
    assert capped.filter(pl.col("drop_reason") == "sequence_cap").height > 0


def test_filters_per_source():
    from geo_assets.settings import IngestSettings

    local = FilterSettings(min_brightness=10.0, phash_max_distance=-1)
    settings = IngestSettings(source_filters=(("local", local),))
    assert settings.filters_for("local") is local
    assert settings.filters_for("mapillary") == FilterSettings()
    assert FilterSettings().group_cap("mapillary") == 20
    assert FilterSettings().group_cap("local") == 0
