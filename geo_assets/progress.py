"""Progress of long steps, with counts, rate and ETA, in one place.

On a terminal the bar is tqdm's (redrawn in place). Anywhere else (Dagster compute logs, CI,
``| tee``) a redrawn bar would leave carriage-return litter or hundreds of near-identical
lines, so a non-TTY stream gets plain lines instead: one at most every ``GEOSCOUT_PROGRESS_EVERY``
seconds (default 30) and one final line, each formatted by tqdm's own ``format_meter`` and
never repeated. ``GEOSCOUT_PROGRESS=off`` silences both; ``=bar`` / ``=lines`` force one.

While a bar is open, every logging handler that writes to the bar's terminal (the training
rank handler, Dagster's console logger, the root logger's) writes through tqdm's
``external_write_mode``: the bar is cleared, the record printed as a whole line, the bar
redrawn below it, so a log line never lands inside a bar.

    for item in track(items, desc="shards", unit="img"):
        ...
    with progress(total=n, desc="download") as bar:
        bar.update(k)
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Self, TypeVar

from tqdm import tqdm

T = TypeVar("T")
ENV_MODE = "GEOSCOUT_PROGRESS"  # auto (default) | bar | lines | off
ENV_EVERY = "GEOSCOUT_PROGRESS_EVERY"
DEFAULT_EVERY_S = 30.0


def _mode(stream: IO[str]) -> str:
    mode = os.environ.get(ENV_MODE, "auto").strip().lower()
    if mode in ("off", "0", "false", "no"):
        return "off"
    if mode in ("bar", "lines"):
        return mode
    isatty = getattr(stream, "isatty", None)
    return "bar" if isatty is not None and isatty() else "lines"


class LineProgress:
    """tqdm's counters and meter text, written as whole lines at most every ``every_s``."""

    def __init__(self, total: int | None, desc: str, unit: str,
                 write: Callable[[str], object], every_s: float, enabled: bool = True) -> None:
        self.total, self.desc, self.unit, self.write = total, desc, unit, write
        self.every_s, self.enabled = every_s, enabled
        self.n, self.start = 0, time.monotonic()
        self._last_write, self._last_n, self._closed = self.start, -1, False

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self._last_write >= self.every_s:
            self._write(now)

    def _write(self, now: float) -> None:
        text = tqdm.format_meter(self.n, self.total, now - self.start, prefix=self.desc,
                                 unit=self.unit, ncols=0)
        self._last_write = now
        if self.enabled and self.n != self._last_n:  # a count is written once
            self.write(text)
            self._last_n = self.n

    def set_postfix_str(self, text: str) -> None:  # the bar's extra, ignored in lines
        del text

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._write(time.monotonic())

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _columns(stream: IO[str]) -> int:
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, OSError, ValueError):
        return 0


def _printer(stream: IO[str]) -> Callable[[str], None]:
    def write(text: str) -> None:
        print(text, file=stream, flush=True)
    return write


class _Bar(tqdm):
    """A tqdm bar that routes terminal log records around itself while open."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._routed = False
        if not self.disable:
            _route_logging(self.fp)
            self._routed = True

    def close(self) -> None:
        try:
            super().close()
        finally:
            if getattr(self, "_routed", False):
                self._routed = False
                _unroute_logging()


_ROUTE_LOCK = threading.Lock()
_routed: set[logging.Handler] = set()  # handlers routed while any bar is open
_open_bars = 0


def _fileno(stream: object) -> int | None:
    try:
        return stream.fileno()  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError):
        return None


def _terminal_handlers(fp: IO[str]) -> list[logging.Handler]:
    """Handlers of every registered logger (and ``logging.lastResort``) that write to the
    same file as the bar. Loggers built outside ``logging.getLogger`` (Dagster's console
    logger of an in-process run) are not registered, so are not found."""
    target = getattr(fp, "_wrapped", fp)  # tqdm wraps the file in a DisableOnWriteError
    fd = _fileno(target)
    loggers = [logging.getLogger(), *(lg for lg in logging.Logger.manager.loggerDict.values()
                                      if isinstance(lg, logging.Logger))]
    # lastResort prints warnings of loggers without handlers (library code run in process)
    handlers = [h for lg in loggers for h in lg.handlers] + [logging.lastResort]
    found = []
    for handler in dict.fromkeys(h for h in handlers if h is not None):
        stream = getattr(handler, "stream", None)
        if stream is not None and (stream is target or
                                   (fd is not None and _fileno(stream) == fd)):
            found.append(handler)
    return found


def _route_logging(fp: IO[str]) -> None:
    """Make terminal handlers emit in tqdm's external write mode (clear, write, redraw). The
    handler is kept, not swapped as ``tqdm.contrib.logging.logging_redirect_tqdm`` does, so
    its filters (the training rank filter) and formatter (Dagster's colours) stay."""
    global _open_bars
    with _ROUTE_LOCK:
        _open_bars += 1
        for handler in _terminal_handlers(fp):
            if handler in _routed:
                continue
            emit = handler.emit

            def routed_emit(record: logging.LogRecord, _emit=emit, _fp=fp) -> None:
                with tqdm.external_write_mode(file=_fp):
                    _emit(record)
            handler.emit = routed_emit  # type: ignore[method-assign]
            _routed.add(handler)


def _unroute_logging() -> None:
    """Once the last open bar closes, every routed handler emits directly again."""
    global _open_bars
    with _ROUTE_LOCK:
        _open_bars -= 1
        if _open_bars > 0:
            return
        for handler in list(_routed):
            handler.__dict__.pop("emit", None)
        _routed.clear()


def progress(total: int | None = None, *, desc: str = "", unit: str = "it",
             stream: IO[str] | None = None, every_s: float | None = None,
             write: Callable[[str], object] | None = None, disable: bool = False):
    """A progress counter (``update(n)``, ``close()``, a context manager): a tqdm bar on a
    terminal, ``LineProgress`` lines elsewhere, silent with ``GEOSCOUT_PROGRESS=off`` or
    ``disable`` (e.g. ranks other than 0). ``write`` (e.g. a Dagster ``context.log.info``)
    takes the lines instead of ``stream``."""
    out = stream or sys.stderr
    mode = "off" if disable else _mode(out) if write is None else (
        "off" if _mode(out) == "off" else "lines")
    if mode == "bar":
        sized = _columns(out) > 0  # a terminal that reports no size gets 100 columns
        return _Bar(total=total, desc=desc, unit=unit, file=out, dynamic_ncols=sized,
                    ncols=None if sized else 100, nrows=None if sized else 24, smoothing=0.1)
    every = every_s if every_s is not None else float(
        os.environ.get(ENV_EVERY, DEFAULT_EVERY_S))
    return LineProgress(total, desc, unit, write or _printer(out), every,
                        enabled=mode != "off")


def track(items: Iterable[T], *, total: int | None = None, desc: str = "", unit: str = "it",
          stream: IO[str] | None = None, every_s: float | None = None) -> Iterator[T]:
    """``items`` unchanged, counting each one on a ``progress`` counter as it is produced
    (so a step whose items are produced by a worker pool counts finished work)."""
    if total is None:
        try:
            total = len(items)  # type: ignore[arg-type]
        except TypeError:  # a stream without a length: counts and rate, no ETA
            total = None
    with progress(total, desc=desc, unit=unit, stream=stream, every_s=every_s) as bar:
        for item in items:
            bar.update(1)  # counted when produced: the consumer may stop right after the last
            yield item
