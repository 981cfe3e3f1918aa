"""Manifest checks at scale: the vectorised secret scan agrees with the exact Redactor on every
value; the decode check can be sampled."""

from __future__ import annotations

import numpy as np
import polars as pl

from geo_assets import manifest_checks
from geo_assets.storage import DataRoot

SECRET = "MLY|4242424242|abcdef0123456789"


def _values(rng, n=3000):
    safe = [f"mapillary:{i}" for i in rng.integers(0, 10**9, n)]
    risky = ["https://graph.mapillary.com/images?access_token=" + SECRET,
             "https://maps.googleapis.com/maps/api/streetview?pano=x&key=AIzaSyXX&signature=abc",
             "Authorization: OAuth " + SECRET, f"error at {SECRET[:9]}", "key=REDACTED",
             "https://scontent.fbcdn.net/v/t51?_nc_ohc=abc&oh=00_AfB&oe=65F0",
             "token:abc", "ACCESS_TOKEN=zzz", "signatures are fine", SECRET.lower()]
    values = safe + risky * 3
    rng.shuffle(values)
    return values


def test_vectorised_secret_scan_gives_the_exact_verdict():
    rng = np.random.default_rng(0)
    manifest = pl.DataFrame({"image_id": _values(rng), "error": _values(rng),
                             "lat_deg": rng.random(3030)})
    n, hits = manifest_checks.suspicious_texts(manifest, [SECRET])
    fast = manifest_checks.leaked_secrets(hits, [SECRET])
    slow = manifest_checks.leaked_secrets(manifest_checks.manifest_texts(manifest), [SECRET])
    assert n == slow.n_checked
    assert fast.n_failed == slow.n_failed > 0 and not fast.passed
    assert len(hits) < 0.05 * n  # only the suspects reach the Python redactor


def test_decode_check_can_be_sampled(tmp_path):
    root = DataRoot(str(tmp_path))
    shas = [f"{i:064x}" for i in range(50)]  # no files stored: every checked one is missing
    manifest = pl.DataFrame({"kept": [True] * 50, "sha256": shas})
    full = manifest_checks.kept_files_bad(manifest, root)
    sampled = manifest_checks.kept_files_bad(manifest, root, sample=10, seed=3)
    assert full.n_checked == 50 and full.n_failed == 50
    assert sampled.n_checked == sampled.n_failed == 10
    assert sampled == manifest_checks.kept_files_bad(manifest, root, sample=10, seed=3)
