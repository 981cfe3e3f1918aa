"""Shared fixtures. Real third-party data lives in ../shared/data and is never copied here:
tests that need it skip with a clear reason when it is absent."""

from __future__ import annotations

from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"


def shared_data_path(*parts: str) -> Path:
    """Path under ../shared/data, or skip the calling test when it is missing."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared test data not available: {path}")
    return path


@pytest.fixture
def shared_data():
    return shared_data_path


@pytest.fixture
def data_root(tmp_path):
    from geo_assets.storage import DataRoot

    return DataRoot(str(tmp_path / "data"))


@pytest.fixture(scope="session")
def demo_world():
    """The tiny demo world (seed 0): a few hundred images over 8 countries."""
    from geo_assets.demo.world import generate_world

    return generate_world(0, "tiny")


@pytest.fixture
def demo_server(demo_world):
    """A started DemoServer for ``demo_world`` on loopback (token "demo-token", key
    "demo-key", no faults); use ``demo_server.url`` as the base URL."""
    from geo_assets.demo.server import DemoServer

    with DemoServer(demo_world) as server:
        yield server
