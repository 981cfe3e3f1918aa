"""The default demo world's test split holds at least 100 independent places, so its figures
move by about one point per place, not six (issue 13)."""

from __future__ import annotations

import polars as pl

from geo_assets.demo.world import generate_world
from geo_assets.settings import SplitSettings
from geo_assets.splits import TEST, make_splits
from pipeline.profiles import DEMO_DATASET


def independent_places(part: pl.DataFrame, km: float = 1.0) -> int:
    """Components of images linked by capture group or by lying closer than ``km``."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from scipy.spatial import cKDTree

    from geo_assets.sphere import km_to_chord, unit_vectors

    xyz = unit_vectors(part["lat_deg"].to_numpy(), part["lon_deg"].to_numpy())
    pairs = cKDTree(xyz).query_pairs(km_to_chord(km), output_type="ndarray")
    groups = part["group_id"].to_list()
    first: dict[str, int] = {}
    links = [(i, first.setdefault(g, i)) for i, g in enumerate(groups)]
    rows = [p[0] for p in pairs] + [a for a, _ in links]
    cols = [p[1] for p in pairs] + [b for _, b in links]
    graph = coo_matrix(([1] * len(rows), (rows, cols)), shape=(part.height, part.height))
    return connected_components(graph, directed=False)[0]


def test_default_demo_world_gives_a_test_split_of_100_independent_places():
    manifest = generate_world(0, "demo").clean_manifest()
    settings = SplitSettings(**DEMO_DATASET)  # the demo profile's split settings
    splits = make_splits(manifest, settings).splits.join(
        manifest.select("image_id", "lat_deg", "lon_deg"), on="image_id")
    assert independent_places(splits.filter(pl.col("split") == TEST)) >= 100
    assert independent_places(splits.filter(pl.col("fold") == 0)) >= 100
