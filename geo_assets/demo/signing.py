"""URL signatures: Google's URL signing (HMAC-SHA1) and the demo CDN's expiring links."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from urllib.parse import urlsplit


def google_signature(path_and_query: str, secret: str) -> str:
    """Google URL signature of ``/path?query`` with a url-safe base64 ``secret``."""
    key = base64.urlsafe_b64decode(secret + "=" * (-len(secret) % 4))
    digest = hmac.new(key, path_and_query.encode(), hashlib.sha1).digest()
    return base64.urlsafe_b64encode(digest).decode()


def sign_google_url(url: str, secret: str) -> str:
    """``url`` with ``&signature=...`` appended, as Google's client libraries do."""
    parts = urlsplit(url)
    signature = google_signature(f"{parts.path}?{parts.query}", secret)
    return f"{url}&signature={signature}"


def verify_google_signature(path: str, raw_query: str, secret: str) -> bool:
    """True when ``raw_query`` ends with a valid ``signature`` of everything before it."""
    head, sep, signature = raw_query.rpartition("&signature=")
    if not sep or not signature:
        return False
    expected = google_signature(f"{path}?{head}", secret)
    return hmac.compare_digest(expected.rstrip("="), signature.rstrip("="))


class ThumbSigner:
    """Signs and checks the demo CDN's expiring thumbnail links."""

    def __init__(self, secret: bytes, ttl_s: float, clock=time.time):
        self.secret = secret
        self.ttl_s = ttl_s
        self.clock = clock

    def _mac(self, path: str, expires: int) -> str:
        msg = f"{path}|{expires}".encode()
        return hmac.new(self.secret, msg, hashlib.sha256).hexdigest()[:32]

    def sign(self, path: str) -> str:
        """``path?exp=...&sig=...`` valid for ``ttl_s`` seconds from now."""
        expires = int(self.clock() + self.ttl_s + 0.999)
        return f"{path}?exp={expires}&sig={self._mac(path, expires)}"

    def check(self, path: str, exp: str | None, sig: str | None) -> str:
        """"ok", "expired" or "bad" (missing or forged signature)."""
        if not exp or not sig or not (exp.isascii() and exp.isdigit()):
            return "bad"
        if not hmac.compare_digest(self._mac(path, int(exp)), sig):
            return "bad"
        return "ok" if self.clock() <= int(exp) else "expired"
