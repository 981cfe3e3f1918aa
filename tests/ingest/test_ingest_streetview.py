"""Street View listing helpers: land-only sampling, settings limits, URL signing layout."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

import numpy as np
import pytest
import shapely

from geo_assets.cells import cell_bounds
from geo_assets.clients.streetview import StreetViewClient, sample_points, sign_url
from geo_assets.errors import InputError
from geo_assets.settings import StreetViewSettings

CELL = "30210"


def test_points_fall_in_the_land_part_only():
    x0, y0, x1, y1 = cell_bounds(CELL)
    land = shapely.box(x0, y0, (x0 + x1) / 2, (y0 + y1) / 2)  # the south-west quarter
    pts = sample_points(CELL, land, 300, np.random.default_rng(0))
    assert len(pts) == 300
    assert shapely.contains_xy(land, pts[:, 1], pts[:, 0]).all()
    everywhere = sample_points(CELL, None, 300, np.random.default_rng(0))
    assert (everywhere[:, 1] > (x0 + x1) / 2).any()


def test_size_and_fov_limits():
    with pytest.raises(InputError, match="640x640"):
        StreetViewSettings(size=(800, 600))
    with pytest.raises(InputError, match="fov"):
        StreetViewSettings(fov=150)


def test_signed_url_signs_path_and_query_with_the_key():
    secret = "c2lnbmluZy1zZWNyZXQ="
    client = StreetViewClient("k3y", secret, base_url="https://example.test/sv")
    url = client.url("", {"pano": "p1", "heading": "90", "size": "640x640"})
    parts = urlsplit(url)
    head, _, signature = parts.query.rpartition("&signature=")
    assert sign_url(f"{parts.path}?{head}", secret) == signature
    assert dict(parse_qsl(head))["key"] == "k3y"
    assert parts.path == "/sv/maps/api/streetview"
    unsigned = StreetViewClient("k3y", base_url="https://example.test").url("", {"pano": "p"})
    assert "signature" not in unsigned
