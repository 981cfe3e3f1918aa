"""The default demo world's test split holds at least 100 independent places, so its figures
move by about one point per place, not six (issue 13)."""

from __future__ import annotations

import polars as pl

from geo_assets.demo.world import PANO_HEADINGS, generate_world
from geo_assets.settings import SplitSettings
from geo_assets.splits import TEST, make_splits


def world_manifest(world) -> pl.DataFrame:
    """The clean images a crawl keeps: Mapillary frames and every panorama heading."""
    rows = [{"image_id": f"mapillary:{im.image_id}", "source": "mapillary",
             "group_id": im.sequence_id, "lat_deg": im.lat, "lon_deg": im.lon}
            for im in world.images if im.artefact is None]
    rows += [{"image_id": f"streetview:{p.pano_id}_{h}", "source": "streetview",
              "group_id": p.pano_id, "lat_deg": p.lat, "lon_deg": p.lon}
             for p in world.panoramas for h in range(PANO_HEADINGS)]
    return pl.DataFrame(rows)


def test_default_demo_world_gives_a_test_split_of_100_independent_places():
    splits = make_splits(world_manifest(generate_world(0, "demo")), SplitSettings()).splits
    test = splits.filter(pl.col("split") == TEST)
    # leak_group: images linked by capture group or by lying closer than 1 km
    assert test["leak_group"].n_unique() >= 100
    assert splits.filter(pl.col("fold") == 0)["leak_group"].n_unique() >= 100
