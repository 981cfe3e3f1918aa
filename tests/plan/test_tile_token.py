"""Coverage tiles carry the Mapillary token as the ``access_token`` query parameter (as
Mapillary's SDK sends it), the Graph API as a header; the token never shows in errors."""

from __future__ import annotations

import pytest

from geo_assets.clients.http import CredentialError
from geo_assets.clients.mapillary import MapillaryClient
from geo_assets.settings import HttpSettings, MapillarySettings


def _client(server, token: str) -> MapillaryClient:
    return MapillaryClient(token, f"{server.url}/mapillary", f"{server.url}/mapillary-tiles",
                           MapillarySettings(http=HttpSettings(requests_per_s=0)))


def test_tiles_send_the_token_as_a_query_parameter(demo_server):
    # the demo server tolerates a tile request without a token but refuses a wrong one in
    # the query string: a refusal shows the token travelled there
    wrong = "MLY|wrong-token-123"
    client = _client(demo_server, wrong)
    try:
        with pytest.raises(CredentialError) as info:
            client.coverage_tile(5, 16, 11)
        assert wrong not in str(info.value)
        assert "Authorization" not in client.tiles.session.headers
        assert client.api.session.headers["Authorization"] == f"OAuth {wrong}"
    finally:
        client.close()
    good = _client(demo_server, "demo-token")
    try:
        assert good.coverage_tile(5, 16, 11) is not None
        assert good.tiles.counters["requests"] == 1
    finally:
        good.close()
