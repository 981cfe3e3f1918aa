"""Secrets never leave a client: URLs, error messages and log records are redacted."""

from __future__ import annotations

import logging

import pytest

from geo_assets.clients.redact import RedactingFilter, Redactor, redact_text, redact_url
from geo_assets.clients.streetview import StreetViewClient
from geo_assets.errors import RemoteServiceError
from geo_assets.settings import HttpSettings, RetryPolicy, StreetViewSettings
from tests.ingest.ingest_helpers import Scripted

KEY = "AIzaSyD-secret-key-123"
SECRET = "vNIXE0xscrmjlyV-12Nj_BvUPaw="


def test_redact_url_keeps_safe_parameters_only():
    url = (f"https://maps.googleapis.com/maps/api/streetview?pano=abc&size=640x640&key={KEY}"
           "&signature=SIGNATURE123")
    out = redact_url(url)
    assert KEY not in out and "SIGNATURE123" not in out
    assert "pano=abc" in out and "size=640x640" in out


def test_signed_cdn_links_lose_path_and_query():
    url = "http://127.0.0.1:9/cdn/mly/123/1024.jpg?exp=1700000000&sig=deadbeef"
    out = redact_url(url)
    assert "deadbeef" not in out and "123/1024" not in out


def test_redactor_replaces_registered_secrets_and_secret_parameters():
    r = Redactor()
    r.add(KEY, None, "")
    text = f"failed: GET /x?key={KEY}&access_token=MLY|abc Authorization: OAuth MLY|zzz {KEY}"
    out = r(text)
    assert KEY not in out and "MLY|abc" not in out and "MLY|zzz" not in out
    assert redact_text("plain message") == "plain message"


def test_logging_filter_redacts_records(caplog):
    logger = logging.getLogger("geoscout.test_redact")
    redactor = Redactor()
    redactor.add(KEY)
    logger.addFilter(RedactingFilter(redactor))
    with caplog.at_level(logging.INFO, logger="geoscout.test_redact"):
        logger.info("calling %s", f"https://x/?key={KEY}")
    assert KEY not in caplog.text and "REDACTED" in caplog.text


def test_client_errors_never_contain_key_or_signature():
    settings = StreetViewSettings(http=HttpSettings(
        requests_per_s=0, retry=RetryPolicy(max_retries=1, backoff_base_s=0.0)))
    with Scripted([(500, b"oops", {})]) as server:
        client = StreetViewClient(KEY, SECRET, base_url=server.url, settings=settings)
        with pytest.raises(RemoteServiceError) as err:
            client.image("pano1", 90)
        sent = server.requests[0]["path"]
    assert KEY in sent and "signature=" in sent  # it was really sent ...
    signature = sent.split("signature=")[1]
    message = str(err.value) + repr(err.value)
    assert KEY not in message and signature not in message and SECRET not in message
    assert err.value.__cause__ is None and err.value.__context__ is None or \
        KEY not in str(err.value.__context__)
