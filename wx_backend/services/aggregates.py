"""Sums computed by the database, within what FerretDB 1.24 answers correctly.

FerretDB 1.24 runs ``$match``/``$group``/``$sort`` but, in a ``$group`` with more than one
accumulator, returns 0 for every accumulator after the first; it also does not evaluate
field paths inside ``$project`` (``{"x": "$a"}`` comes back as the string ``"$a"``) nor
``$subtract``/``$substr``. So each figure is its own one-accumulator pipeline, run
concurrently; on MongoDB the same pipelines are merely a little more numerous than needed.
"""

from __future__ import annotations

import asyncio
from typing import Any

from pymongo.asynchronous.collection import AsyncCollection


async def db_sum(coll: AsyncCollection, match: dict[str, Any], field: str | int) -> int:
    """``$sum`` of ``field`` (a path like ``"kwh.total"``, or ``1`` to count) over ``match``."""
    expr = field if isinstance(field, int) else f"${field}"
    pipeline = [{"$match": match}, {"$group": {"_id": None, "v": {"$sum": expr}}}]
    rows = await (await coll.aggregate(pipeline)).to_list(None)
    return int(rows[0]["v"]) if rows else 0


async def db_sums(coll: AsyncCollection, match: dict[str, Any], fields: dict[str, str | int]) -> dict[str, int]:
    """Several sums over the same documents: ``{name: path}`` -> ``{name: int}``."""
    names = list(fields)
    values = await asyncio.gather(*(db_sum(coll, match, fields[name]) for name in names))
    return dict(zip(names, values, strict=True))


async def db_sum_by(coll: AsyncCollection, match: dict[str, Any], key: str, field: str | int) -> dict[Any, int]:
    """``$sum`` of ``field`` grouped by ``key`` (a path), sorted by key: ``{key value: sum}``."""
    expr = field if isinstance(field, int) else f"${field}"
    pipeline = [{"$match": match}, {"$group": {"_id": f"${key}", "v": {"$sum": expr}}}, {"$sort": {"_id": 1}}]
    rows = await (await coll.aggregate(pipeline)).to_list(None)
    return {row["_id"]: int(row["v"]) for row in rows}
