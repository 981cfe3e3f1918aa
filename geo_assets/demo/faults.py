"""Fault injection for the demo server, reproducible by seed.

Each request gets at most one fault, decided by a hash of (seed, request key, attempt
number): the n-th attempt at the same request always meets the same fate, and a retry is
a fresh draw, so retries can succeed.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, fields

# Which faults each kind of endpoint can suffer, in the order they are drawn.
ENDPOINT_FAULTS: dict[str, tuple[str, ...]] = {
    "mapillary.images": ("5xx", "429", "rate_limit_403", "query_timeout_400", "slow",
                         "drop_connection"),
    "mapillary.api": ("5xx", "429", "rate_limit_403", "slow", "drop_connection"),
    "image": ("5xx", "429", "slow", "drop_connection", "truncated_jpeg", "non_image"),
    "streetview.metadata": ("5xx", "429", "slow", "drop_connection"),
    "tiles": ("5xx", "429", "slow", "drop_connection"),
}


@dataclass(frozen=True)
class FaultConfig:
    """Per-request probability of each fault (0 disables it)."""

    seed: int = 0
    rate_5xx: float = 0.0
    rate_429: float = 0.0
    rate_rate_limit_403: float = 0.0
    rate_query_timeout_400: float = 0.0
    rate_slow: float = 0.0
    slow_seconds: float = 2.0
    rate_drop_connection: float = 0.0
    rate_truncated_jpeg: float = 0.0
    rate_non_image: float = 0.0
    retry_after_s: int = 1

    def rate(self, fault: str) -> float:
        return float(getattr(self, f"rate_{fault}"))

    @classmethod
    def from_spec(cls, spec: str) -> FaultConfig:
        """Parse ``"rate_5xx=0.1,rate_429=0.05,seed=3"`` (the CLI's ``--faults``)."""
        known = {f.name: f.type for f in fields(cls)}
        values: dict[str, float | int] = {}
        for item in filter(None, (s.strip() for s in spec.split(","))):
            name, _, value = item.partition("=")
            name = name.strip()
            if name not in known:
                raise ValueError(f"unknown fault setting {name!r}: use {sorted(known)}")
            values[name] = int(value) if name in ("seed", "retry_after_s") else float(value)
        return cls(**values)


class FaultInjector:
    """Decides each request's fault and remembers how often each request was seen."""

    def __init__(self, config: FaultConfig | None):
        self.config = config or FaultConfig()
        self._attempts: dict[str, int] = {}
        self._lock = threading.Lock()

    def decide(self, endpoint: str, key: str) -> str | None:
        """The fault for this attempt at request ``key`` on ``endpoint``, or None."""
        faults = ENDPOINT_FAULTS[endpoint]
        if not any(self.config.rate(f) > 0 for f in faults):
            return None
        with self._lock:
            attempt = self._attempts.get(key, 0)
            self._attempts[key] = attempt + 1
        digest = hashlib.blake2b(f"{self.config.seed}|{key}|{attempt}".encode(),
                                 digest_size=8).digest()
        u = int.from_bytes(digest, "big") / 2**64
        edge = 0.0
        for fault in faults:
            edge += self.config.rate(fault)
            if u < edge:
                return fault
        return None
