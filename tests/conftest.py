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
