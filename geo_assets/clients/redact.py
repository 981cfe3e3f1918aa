"""Secret redaction, in one place.

Tokens, API keys, signing secrets, URL signatures and signed CDN URLs must never reach a log,
an exception message, a manifest or asset metadata. Every client formats URLs and error text
through :class:`Redactor` before they leave it, and :class:`RedactingFilter` scrubs log
records of the ``geoscout`` loggers as a second line of defence. A registered secret is
matched raw, URL-encoded (``quote`` and ``quote_plus``) and base64-encoded (standard and
URL-safe alphabets, at each of the three byte alignments it can have inside a longer encoded
string, as in a ``Basic`` header or an echoed, encoded query).
"""

from __future__ import annotations

import base64
import logging
import re
import threading
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, quote, quote_plus, urlencode, urlsplit, urlunsplit

REDACTED = "REDACTED"

# query parameters that are safe to show; every other parameter's value is redacted
SAFE_PARAMS = frozenset(
    {"bbox", "fields", "limit", "location", "radius", "source", "pano", "heading", "size",
     "pitch", "fov", "return_error_code", "z", "x", "y"}
)
# parameter names that always carry a secret, wherever they appear in free text
_SECRET_PARAM_RE = re.compile(
    r"(?i)\b(access_token|token|key|client_secret|signature|sig|oh|oe|_nc_sid|_nc_ohc|"
    r"expires|x-amz-signature|x-amz-credential)=([^&\s'\"]+)"
)
_AUTH_HEADER_RE = re.compile(r"(?i)(authorization['\"]?\s*[:=]\s*['\"]?(?:oauth|bearer)\s+)(\S+?)(['\"]|\s|$)")


def redact_url(url: str) -> str:
    """``url`` with every non-whitelisted query value replaced by ``REDACTED``.

    Paths under ``/cdn/`` (signed thumbnail links) lose their path as well.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return REDACTED
    query = urlencode(
        [(k, v if k in SAFE_PARAMS else REDACTED) for k, v in parse_qsl(parts.query, True)],
        safe=",",
    )
    path = parts.path
    if "/cdn/" in path or "fbcdn" in parts.netloc:
        path = path.split("/cdn/")[0] + "/cdn/" + REDACTED if "/cdn/" in path else "/" + REDACTED
    return urlunsplit((parts.scheme, parts.netloc, path, query, ""))


@dataclass
class Redactor:
    """Replaces known secret strings and secret-looking URL parameters in text."""

    secrets: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, *values: str | None) -> None:
        """Register secrets (and their encoded forms); they are also redacted from every log
        record of the process."""
        forms = {f for v in values if v and len(v) >= 4 for f in encoded_forms(v)}
        with self._lock:
            self.secrets.update(forms)
        if self is not PROCESS_REDACTOR:
            PROCESS_REDACTOR.add(*values)

    def __call__(self, text: object) -> str:
        out = str(text)
        with self._lock:
            secrets = sorted(self.secrets, key=len, reverse=True)
        for secret in secrets:
            out = out.replace(secret, REDACTED)
        return redact_text(out)


def _base64_cores(raw: bytes) -> set[str]:
    """The base64 characters that depend only on ``raw``, at each alignment in a stream."""
    out = set()
    for offset in range(3):
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            enc = encode(b"\0" * offset + raw).decode()
            start, end = -(-offset * 4 // 3), (offset + len(raw)) * 4 // 3
            core = enc[start:end]
            if len(core) >= 6:
                out.add(core)
    return out


def encoded_forms(secret: str) -> set[str]:
    """``secret`` raw, URL-encoded and base64-encoded (forms of at least 4 characters)."""
    forms = {secret, quote(secret, safe=""), quote_plus(secret), quote(secret)}
    forms |= {f.lower() for f in forms if "%" in f}  # lower-case percent escapes
    forms |= _base64_cores(secret.encode())
    return {f for f in forms if len(f) >= 4}


def redact_text(text: str) -> str:
    """Scrub secret-looking URL parameters and authorization headers from free text."""
    text = _SECRET_PARAM_RE.sub(lambda m: f"{m.group(1)}={REDACTED}", text)
    return _AUTH_HEADER_RE.sub(lambda m: f"{m.group(1)}{REDACTED}{m.group(3)}", text)


class RedactingFilter(logging.Filter):
    """A logging filter that redacts secrets from the formatted message of every record."""

    def __init__(self, redactor: Redactor | None = None) -> None:
        super().__init__()
        self.redactor = redactor or Redactor()

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self.redactor(record.getMessage())
        record.args = None
        return True


# Every secret any client was given, for the log filter below (secrets only ever added).
PROCESS_REDACTOR = Redactor()
# loggers whose records may carry request URLs: ours, and urllib3's debug request lines
REDACTED_LOGGERS = ("geoscout", "geoscout.http", "urllib3.connectionpool", "requests")


def install_log_redaction(loggers: tuple[str, ...] = REDACTED_LOGGERS) -> None:
    """Attach the process-wide redacting filter to ``loggers`` and install a log-record
    factory that redacts every record of the process (Dagster's included) once a secret is
    registered (idempotent)."""
    for name in loggers:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactingFilter) and f.redactor is PROCESS_REDACTOR
                   for f in logger.filters):
            logger.addFilter(RedactingFilter(PROCESS_REDACTOR))
    factory = logging.getLogRecordFactory()
    if not getattr(factory, "geoscout_redacting", False):
        logging.setLogRecordFactory(_redacting_factory(factory))


def _redacting_factory(inner):
    def factory(*args, **kwargs) -> logging.LogRecord:
        record = inner(*args, **kwargs)
        if PROCESS_REDACTOR.secrets:
            try:
                message = record.getMessage()
            except Exception:  # noqa: BLE001 - a bad format string: keep the record as it is
                return record
            record.msg, record.args = PROCESS_REDACTOR(message), None
        return record

    factory.geoscout_redacting = True
    return factory
