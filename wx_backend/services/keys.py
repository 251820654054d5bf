"""The ``_id``s of bills and meter readings, and the reads of an account's bills and readings.

A bill is stored under ``{account_no}:{period}`` and a meter reading under
``{account_no}:{kind}:{key}``: the natural identity of each, so an upsert from the marketing
system or an import is one write by ``_id``. An account's bills for a range of months (or its
readings for a range of days) are read with one query whose first condition is an equality on
``account_no``, the leading field of the compound indexes the services declare
(``bills (account_no, period)``, ``usage (account_no, kind, key)``): one round trip, served by
the index on MongoDB and on the embedded FerretDB (docs/storage.md).
"""

from __future__ import annotations

from typing import Any

from pymongo.asynchronous.database import AsyncDatabase


def bill_id(account_no: str, period: str) -> str:
    return f"{account_no}:{period}"


def reading_id(account_no: str, kind: str, key: str) -> str:
    """``kind`` is ``day`` (``key`` YYYY-MM-DD) or ``month`` (``key`` YYYY-MM)."""
    return f"{account_no}:{kind}:{key}"


def _with(projection: dict[str, Any] | None, field: str) -> dict[str, Any] | None:
    return None if projection is None else {**projection, field: 1}


async def read_bills(
    db: AsyncDatabase, account_no: str, first: str, last: str, projection: dict[str, Any] | None = None
) -> dict[str, dict[str, Any]]:
    """The account's bills from period ``first`` to ``last``, by period (missing months left out)."""
    cursor = db.bills.find(
        {"account_no": account_no, "period": {"$gte": first, "$lte": last}}, _with(projection, "period")
    )
    return {doc["period"]: doc async for doc in cursor}


async def read_readings(
    db: AsyncDatabase, account_no: str, kind: str, keys: list[str], projection: dict[str, Any] | None = None
) -> dict[str, dict[str, Any]]:
    """The account's readings of ``kind`` with these keys (days or months), by key (missing ones left out)."""
    if not keys:
        return {}
    wanted = set(keys)
    cursor = db.usage.find(
        {"account_no": account_no, "kind": kind, "key": {"$gte": min(keys), "$lte": max(keys)}},
        _with(projection, "key"),
    )
    return {doc["key"]: doc async for doc in cursor if doc["key"] in wanted}
