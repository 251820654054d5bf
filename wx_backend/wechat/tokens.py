"""Access tokens, cached in MongoDB and refreshed by one caller at a time.

WeChat issues a new token on every ``/cgi-bin/token`` call and retires the previous one
a few minutes later, so independent refreshers knock each other's tokens out (40001).
Here one refresher per token generation claims the ``wx_tokens`` document (a conditional
update naming the generation) while it fetches; everyone else, in this process or another,
waits for the document to change. Callers in one process also share a single
in-flight refresh.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TypeVar

from pymongo.asynchronous.database import AsyncDatabase

from ..db import utcnow
from ..errors import WeChatUnavailable
from .http import WeChatAPIError, WeChatHTTP

log = logging.getLogger(__name__)

T = TypeVar("T")

# WeChat's errcodes that mean "this token is no good": refresh once and retry.
TOKEN_ERRORS = {40001, 40014, 42001}
EARLY_REFRESH = timedelta(seconds=300)
LEASE = timedelta(seconds=15)


class AccessTokens:
    def __init__(self, db: AsyncDatabase, http: WeChatHTTP, appid: str, secret: str):
        self._coll = db["wx_tokens"]
        self._http = http
        self.appid = appid
        self._secret = secret
        self._owner = f"{os.getpid()}-{id(self)}"
        self._inflight: asyncio.Future[str] | None = None

    async def get(self) -> str:
        """A valid access token, fetching a new one only when the cached one is stale."""
        doc = await self._coll.find_one({"_id": self.appid})
        if self._fresh(doc):
            return doc["token"]
        return await self._refresh(stale=None)

    async def call(self, fn: Callable[[str], Awaitable[T]]) -> T:
        """Run ``fn(token)``; if WeChat rejects the token, refresh once and run it again."""
        token = await self.get()
        try:
            return await fn(token)
        except WeChatAPIError as exc:
            if exc.errcode not in TOKEN_ERRORS:
                raise
            log.warning("access token for %s rejected (%s); refreshing", self.appid, exc.errcode)
            token = await self._refresh(stale=token)
            return await fn(token)

    def _fresh(self, doc: dict | None, stale: str | None = None) -> bool:
        return bool(doc and doc.get("token") and doc["token"] != stale and doc["expires_at"] - EARLY_REFRESH > utcnow())

    async def _refresh(self, stale: str | None) -> str:
        if self._inflight is None or self._inflight.done():
            self._inflight = asyncio.ensure_future(self._refresh_once(stale))
        return await asyncio.shield(self._inflight)

    async def _refresh_once(self, stale: str | None) -> str:
        deadline = asyncio.get_running_loop().time() + LEASE.total_seconds() * 2
        # the document exists from the first refresh on (an atomic upsert: one of any number)
        await self._coll.update_one({"_id": self.appid}, {"$setOnInsert": {"generation": 0}}, upsert=True)
        while True:
            doc = await self._coll.find_one({"_id": self.appid})
            if self._fresh(doc, stale):
                return doc["token"]
            generation = doc.get("generation", 0)
            if await self._claim(generation):
                return await self._fetch_and_store(generation)
            if asyncio.get_running_loop().time() > deadline:
                raise WeChatUnavailable(details={"reason": "access token refresh timed out"})
            await asyncio.sleep(0.05)

    async def _claim(self, generation: int) -> bool:
        """Become the one refresher of this generation: a conditional update that succeeds only
        while the generation is unchanged and nobody else's claim is current. The claim's
        expiry (LEASE) only lets another take over from a refresher that died; what it stores
        is fenced by the generation, so a late refresher never replaces a newer token."""
        now = utcnow()
        claimed = await self._coll.update_one(
            {
                "_id": self.appid,
                "generation": generation,
                "$or": [
                    {"refreshing_until": {"$exists": False}},
                    {"refreshing_until": None},
                    {"refreshing_until": {"$lte": now}},
                ],
            },
            {"$set": {"refresher": self._owner, "refreshing_until": now + LEASE}},
        )
        return claimed.modified_count == 1

    async def _fetch(self) -> tuple[str, int]:
        """A new token from WeChat and its lifetime in seconds (a subclass caches another credential)."""
        data = await self._http.json(
            "GET",
            "/cgi-bin/token",
            params={
                "grant_type": "client_credential",
                "appid": self.appid,
                "secret": self._secret,
            },
        )
        return data["access_token"], int(data.get("expires_in", 7200))

    async def _fetch_and_store(self, generation: int) -> str:
        try:
            token, expires_in = await self._fetch()
        except BaseException:
            await self._coll.update_one(
                {"_id": self.appid, "generation": generation, "refresher": self._owner},
                {"$set": {"refreshing_until": None}},
            )
            raise
        expires_at = utcnow() + timedelta(seconds=expires_in)
        stored = await self._coll.update_one(
            {"_id": self.appid, "generation": generation, "refresher": self._owner},
            {
                "$set": {
                    "token": token,
                    "expires_at": expires_at,
                    "generation": generation + 1,
                    "fetched_at": utcnow(),
                    "refreshing_until": None,
                }
            },
        )
        if not stored.modified_count:  # taken over meanwhile: the newer token stands
            log.warning("access token for %s: a newer generation was stored first", self.appid)
            doc = await self._coll.find_one({"_id": self.appid})
            return doc["token"]
        log.info("access token for %s refreshed", self.appid)
        return token
