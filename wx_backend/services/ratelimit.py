"""Counters that limit how often something may happen, shared by every backend process.

One document per key in ``rate_limits``: ``{_id: key, period, count, last_at}``. A call is
allowed by a single conditional update (same period, count under the limit, last call long
enough ago), so concurrent callers in several processes can never exceed the limit together:
MongoDB applies each update to one document atomically. A new period resets the count.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from ..db import utcnow
from ..errors import TooManyRequests

LOCAL = ZoneInfo("Asia/Shanghai")


def local_day(now: datetime) -> str:
    """The calendar day in China: daily limits reset at local midnight."""
    return now.astimezone(LOCAL).strftime("%Y-%m-%d")


def local_hour(now: datetime) -> str:
    return now.astimezone(LOCAL).strftime("%Y-%m-%dT%H")


class RateLimiter:
    def __init__(self, db: AsyncDatabase):
        self.db = db

    async def take(
        self,
        key: str,
        *,
        period: str,
        limit: int,
        min_interval: int = 0,
        message: str = "操作过于频繁，请稍后再试",
        now: datetime | None = None,
    ) -> None:
        """Count one call under ``key`` or raise ``TooManyRequests`` (429, ``details.retry_after``).

        At most ``limit`` calls per ``period`` (a label such as ``local_day(now)``), and at least
        ``min_interval`` seconds between two calls.
        """
        now = now or utcnow()
        quiet_since = now - timedelta(seconds=min_interval)
        coll = self.db.rate_limits
        same = await coll.update_one(
            {"_id": key, "period": period, "count": {"$lt": limit}, "last_at": {"$lte": quiet_since}},
            {"$inc": {"count": 1}, "$set": {"last_at": now}},
        )
        if same.matched_count:
            return
        fresh = await coll.update_one(
            {"_id": key, "period": {"$ne": period}, "last_at": {"$lte": quiet_since}},
            {"$set": {"period": period, "count": 1, "last_at": now}},
        )
        if fresh.matched_count:
            return
        try:
            await coll.insert_one({"_id": key, "period": period, "count": 1, "last_at": now})
            return
        except DuplicateKeyError:
            pass
        doc = await coll.find_one({"_id": key}) or {}
        last_at = doc.get("last_at")
        if last_at is not None and last_at > quiet_since:
            wait = max(1, math.ceil(min_interval - (now - last_at).total_seconds()))
            raise TooManyRequests(f"操作过于频繁，请 {wait} 秒后再试", details={"retry_after": wait})
        raise TooManyRequests(message, details={"limit": limit})
