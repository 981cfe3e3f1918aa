"""Request budgets per endpoint class (search, entity, tiles, CDN): per minute and per day.

The clients call ``budget.take(endpoint_class)`` before each request. Over the per-minute
budget the call waits for the sliding minute window; over the per-day budget it raises
``DailyBudgetExhausted`` (a ``QuotaExceededError``): the crawl stops and the cells are retried
after midnight UTC (``resume_at``). A day's usage is kept in the data root
(``layout.request_usage(day)``) so that later runs the same day continue from it; runs at the
same time each count their own requests on top of what was stored when they started.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter, deque
from collections.abc import Callable

from geo_assets import layout
from geo_assets.clients.http import QuotaExceededError
from geo_assets.settings import RequestBudgetSettings
from geo_assets.storage import DataRoot

ENDPOINT_CLASSES = ("search", "entity", "tiles", "cdn")
DAY_S = 86_400


class DailyBudgetExhausted(QuotaExceededError):
    def __init__(self, message: str, resume_at: float) -> None:
        super().__init__(message)
        self.resume_at = resume_at


def utc_day(now: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(now))


class RequestBudget:
    """Thread-safe per-class request budgets; see the module docstring."""

    def __init__(self, settings: RequestBudgetSettings, used_today: dict | None = None, *,
                 clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.settings, self.clock, self.sleep = settings, clock, sleep
        self.day = utc_day(clock())
        self.used: Counter[str] = Counter(used_today or {})
        self.windows: dict[str, deque] = {c: deque() for c in ENDPOINT_CLASSES}
        self._lock = threading.Lock()

    def take(self, endpoint_class: str) -> None:
        per_min = getattr(self.settings, f"{endpoint_class}_per_min")
        per_day = getattr(self.settings, f"{endpoint_class}_per_day")
        while True:
            with self._lock:
                now = self.clock()
                if utc_day(now) != self.day:
                    self.day, self.used = utc_day(now), Counter()
                if per_day and self.used[endpoint_class] >= per_day:
                    resume = (now // DAY_S + 1) * DAY_S
                    raise DailyBudgetExhausted(
                        f"daily request budget for {endpoint_class} ({per_day}) is used up: "
                        "requests resume after 00:00 UTC", resume)
                window = self.windows[endpoint_class]
                while window and window[0] <= now - 60:
                    window.popleft()
                if not per_min or len(window) < per_min:
                    window.append(now)
                    self.used[endpoint_class] += 1
                    return
                wait = window[0] + 60 - now
            self.sleep(max(wait, 0.01))

    def usage(self) -> dict[str, int]:
        with self._lock:
            return {c: self.used[c] for c in ENDPOINT_CLASSES if self.used[c]}


def load_usage(root: DataRoot, source: str, day: str) -> dict[str, int]:
    rel = layout.request_usage(source, day)
    return json.loads(root.read_bytes(rel)) if root.exists(rel) else {}


def save_usage(root: DataRoot, source: str, budget: RequestBudget) -> None:
    root.write_bytes(layout.request_usage(source, budget.day),
                     json.dumps(budget.usage(), sort_keys=True).encode())
