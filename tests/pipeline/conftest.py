"""Fixtures for the Dagster wiring tests: the tiny demo world on loopback, a grid for a small
region written into a temporary data root, and the resources that point at both."""

from __future__ import annotations

from collections import Counter

import pytest

from geo_assets.cells import points_to_cells
from geo_assets.storage import DataRoot

TINY_SEED = 0
CRAWL_LEVEL = 5


@pytest.fixture(scope="session")
def tiny_world():
    from geo_assets.demo.world import generate_world

    return generate_world(TINY_SEED, "tiny")


@pytest.fixture(scope="session")
def demo_server(tiny_world):
    """One tiny-world server for the session, registered so that demo-mode resources with
    ``demo_seed=TINY_SEED, demo_preset="tiny"`` reuse it instead of starting their own."""
    from geo_assets.demo.server import DemoServer
    from pipeline.resources import DEMO_GOOGLE_KEY, DEMO_MAPILLARY_TOKEN, demo_servers

    with DemoServer(tiny_world, mapillary_token=DEMO_MAPILLARY_TOKEN,
                    google_key=DEMO_GOOGLE_KEY) as server:
        demo_servers.use(TINY_SEED, "tiny", server)
        yield server
        demo_servers.forget(TINY_SEED, "tiny")


@pytest.fixture(scope="session")
def covered_cells(tiny_world) -> list[str]:
    """Level-5 cells of the tiny world, most Mapillary images first."""
    lat, lon = tiny_world.image_lat_lon
    counts = Counter(points_to_cells(lat, lon, CRAWL_LEVEL).tolist())
    return [cell for cell, _ in counts.most_common()]


def write_grid(data_root: str, region: str, max_level: int = CRAWL_LEVEL) -> list[str]:
    """Build and write the land grid of ``region``; return its crawl cells."""
    from geo_assets.grid import build_grid, crawl_cells
    from geo_assets.grid import write_grid as write
    from geo_assets.naturalearth import embedded_countries
    from geo_assets.regions import parse_region

    grid = build_grid(embedded_countries(), max_level, region=parse_region(region)).cells
    write(grid, DataRoot(data_root))
    return crawl_cells(grid, CRAWL_LEVEL)


def cell_region(cell_id: str, margin_deg: float = 0.0) -> str:
    """A bbox region spec covering ``cell_id`` (slightly inside it unless a margin is given)."""
    from geo_assets.cells import cell_bounds

    min_lon, min_lat, max_lon, max_lat = cell_bounds(cell_id)
    inset = -margin_deg if margin_deg else 0.01
    return (f"bbox:{max(min_lon + inset, -180)},{max(min_lat + inset, -89.9)},"
            f"{min(max_lon - inset, 180)},{min(max_lat - inset, 89.9)}")


def tiny_resources(data_root: str, region: str = "world", **settings) -> dict[str, object]:
    from pipeline.profiles import DEMO_TRAINING
    from pipeline.resources import build_resources

    demo = {"demo_seed": TINY_SEED, "demo_preset": "tiny", "requests_per_s": 0}
    return build_resources({
        "settings": {"data_root": data_root, "region": region, "crawl_level": CRAWL_LEVEL,
                     "grid_max_level": CRAWL_LEVEL, "sources": ["mapillary", "streetview"],
                     "images_per_cell": 40, **settings},
        "mapillary": demo,
        "streetview": {**demo, "store_images_acknowledged": True},
        "training": DEMO_TRAINING,
    })
