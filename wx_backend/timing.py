"""Where a request's time goes, as a ``Server-Timing`` header (W3C Server Timing).

``with timing.collect() as spent:`` around a piece of work; inside it, ``timing.add(name, ms)``
or ``with timing.span(name):`` adds to a named total (the document pool records ``queue``,
``pdf`` and ``transfer``; the contract service ``storage``). Outside a ``collect`` block both
do nothing, so services call them freely. ``spent.header(total_ms)`` renders
``queue;dur=1.2, pdf;dur=812.0, …, other;dur=…`` (``other``: the rest of ``total_ms``).
"""

from __future__ import annotations

import contextlib
import contextvars
import time
from collections.abc import Iterator

_current: contextvars.ContextVar[Timings | None] = contextvars.ContextVar("timings", default=None)


class Timings:
    def __init__(self) -> None:
        self.ms: dict[str, float] = {}

    def add(self, name: str, ms: float) -> None:
        self.ms[name] = self.ms.get(name, 0.0) + ms

    def header(self, total_ms: float | None = None) -> str:
        parts = dict(self.ms)
        if total_ms is not None:
            parts["other"] = max(0.0, total_ms - sum(self.ms.values()))
            parts["total"] = total_ms
        return ", ".join(f"{name};dur={ms:.1f}" for name, ms in parts.items())


@contextlib.contextmanager
def collect() -> Iterator[Timings]:
    spent = Timings()
    token = _current.set(spent)
    try:
        yield spent
    finally:
        _current.reset(token)


def add(name: str, ms: float) -> None:
    spent = _current.get()
    if spent is not None:
        spent.add(name, ms)


@contextlib.contextmanager
def span(name: str) -> Iterator[None]:
    t0 = time.perf_counter()
    try:
        yield
    finally:
        add(name, (time.perf_counter() - t0) * 1000)


def parse(header: str) -> dict[str, float]:
    """``{"pdf": 812.0, …}`` from a ``Server-Timing`` header written by ``Timings.header``."""
    out: dict[str, float] = {}
    for part in header.split(","):
        name, _, dur = part.strip().partition(";dur=")
        if name and dur:
            out[name] = float(dur)
    return out
