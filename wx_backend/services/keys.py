"""Natural ``_id``s of the documents the customer's queries read most.

An account is stored under its account number, a bill under ``{account_no}:{period}``, a meter
reading under ``{account_no}:{kind}:{key}`` and a session under the hash of its token. A query
then knows the ``_id``s it needs (the periods of a year, the days of a month) and reads each
with an equality on ``_id`` alone: on MongoDB that is the ``_id`` index, and it is the only
lookup FerretDB 1.24 answers from an index at all (every other filter reads the whole
collection; docs/storage.md). The fields inside (``account_no``, ``period``, ...) stay, for
the other queries and for people reading the data. ``read_bills`` and ``read_readings`` are
those reads for a range of months or a list of days.
"""

from __future__ import annotations

from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from ..db import find_by_ids
from .periods import add_months


def bill_id(account_no: str, period: str) -> str:
    return f"{account_no}:{period}"


def reading_id(account_no: str, kind: str, key: str) -> str:
    """``kind`` is ``day`` (``key`` YYYY-MM-DD) or ``month`` (``key`` YYYY-MM)."""
    return f"{account_no}:{kind}:{key}"


async def read_bills(db: AsyncDatabase, account_no: str, first: str, last: str,
                     projection: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """The account's bills from period ``first`` to ``last``, by period (missing months left out)."""
    periods, period = [], first
    while period <= last:
        periods.append(period)
        period = add_months(period, 1)
    found = await find_by_ids(db.bills, [bill_id(account_no, p) for p in periods], projection)
    return {doc["period"]: doc for doc in found.values()}


async def read_readings(db: AsyncDatabase, account_no: str, kind: str, keys: list[str],
                        projection: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """The account's readings of ``kind`` with these keys (days or months), by key (missing ones left out)."""
    found = await find_by_ids(db.usage, [reading_id(account_no, kind, k) for k in keys], projection)
    return {doc["key"]: doc for doc in found.values()}
