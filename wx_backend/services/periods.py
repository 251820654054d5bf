"""Arithmetic on billing periods (``YYYY-MM``) and days, and the local calendar (Asia/Shanghai).

Only for values already checked by ``wx_backend.validators`` (``is_period``, ``is_day``)."""

from __future__ import annotations

import calendar
from datetime import date, datetime
from zoneinfo import ZoneInfo

SHANGHAI = ZoneInfo("Asia/Shanghai")


def add_months(period: str, months: int) -> str:
    """The period ``months`` after (or before, when negative) ``period``."""
    year, month = int(period[:4]), int(period[5:7])
    index = year * 12 + month - 1 + months
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


def add_months_to_day(day: date, months: int) -> date:
    """The same day of the month ``months`` later, or that month's last day when it is shorter
    (2024-01-31 plus one month: 2024-02-29)."""
    later = add_months(f"{day.year:04d}-{day.month:02d}", months)
    year, month = int(later[:4]), int(later[5:7])
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def months_between(first: str, last: str) -> int:
    """How many periods from ``first`` to ``last`` inclusive (0 or less when ``last`` is earlier)."""
    return (int(last[:4]) * 12 + int(last[5:7])) - (int(first[:4]) * 12 + int(first[5:7])) + 1


def period_days(period: str) -> list[str]:
    year, month = int(period[:4]), int(period[5:7])
    return [f"{period}-{d:02d}" for d in range(1, calendar.monthrange(year, month)[1] + 1)]


def local_today(now: datetime) -> date:
    return now.astimezone(SHANGHAI).date()


def period_of(day: date) -> str:
    return f"{day.year:04d}-{day.month:02d}"


def permille_change(current: int | None, previous: int | None) -> int | None:
    """(current - previous) / previous in per-mille, rounded half away from zero; None when unknown.

    Integer arithmetic only; no change is computed against a missing month or a zero month.
    """
    if current is None or previous is None or previous <= 0:
        return None
    diff = current - previous
    value = (abs(diff) * 2000 + previous) // (2 * previous)
    return value if diff >= 0 else -value


def ratio_round(numerator: int, denominator: int) -> int | None:
    """numerator / denominator rounded half up (both non-negative); None when the denominator is 0."""
    if denominator <= 0:
        return None
    return (2 * numerator + denominator) // (2 * denominator)
