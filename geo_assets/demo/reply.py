"""What a request handler returns to the server: status, body, content type, headers."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field


@dataclass
class Reply:
    status: int
    body: bytes
    content_type: str = "application/json; charset=UTF-8"
    headers: dict[str, str] = field(default_factory=dict)
    fault: str | None = None  # the injected fault this reply carries, if any
    drop: bool = False  # close the connection without answering


def json_reply(status: int, obj, headers: dict[str, str] | None = None) -> Reply:
    body = json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()
    return Reply(status, body, headers=dict(headers or {}))


def text_reply(status: int, text: str, content_type: str = "text/plain; charset=UTF-8") -> Reply:
    return Reply(status, text.encode(), content_type)


def trace_id() -> str:
    """A Facebook-style ``fbtrace_id``."""
    return secrets.token_urlsafe(17)[:23]
