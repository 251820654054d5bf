"""Access tokens, cached in MongoDB and refreshed by one caller at a time.

WeChat issues a new token on every ``/cgi-bin/token`` call and retires the previous one
a few minutes later, so independent refreshers knock each other's tokens out (40001).
Here one refresher holds a short lease in the ``wx_tokens`` document while it fetches;
everyone else, in this process or another, waits for the document to change. Callers in
one process also share a single in-flight refresh.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TypeVar

from pymongo import ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

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
        return bool(
            doc and doc.get("token") and doc["token"] != stale
            and doc["expires_at"] - EARLY_REFRESH > utcnow()
        )

    async def _refresh(self, stale: str | None) -> str:
        if self._inflight is None or self._inflight.done():
            self._inflight = asyncio.ensure_future(self._refresh_once(stale))
        return await asyncio.shield(self._inflight)

    async def _refresh_once(self, stale: str | None) -> str:
        deadline = asyncio.get_running_loop().time() + LEASE.total_seconds() * 2
        while True:
            doc = await self._coll.find_one({"_id": self.appid})
            if self._fresh(doc, stale):
                return doc["token"]
            if await self._acquire_lease(stale):
                return await self._fetch_and_store()
            if asyncio.get_running_loop().time() > deadline:
                raise WeChatUnavailable(details={"reason": "access token refresh timed out"})
            await asyncio.sleep(0.05)

    async def _acquire_lease(self, stale: str | None) -> bool:
        now = utcnow()
        # The lease is taken only while the token is still stale: a caller that read the
        # document just before another process stored a fresh token must not fetch again.
        still_stale = [{"token": None}, {"expires_at": {"$lte": now + EARLY_REFRESH}}]
        if stale:
            still_stale.append({"token": stale})
        try:
            doc = await self._coll.find_one_and_update(
                {"_id": self.appid, "$and": [
                    {"$or": [{"lease_until": None}, {"lease_until": {"$lt": now}}]},
                    {"$or": still_stale},
                ]},
                {"$set": {"lease_until": now + LEASE, "lease_owner": self._owner},
                 "$setOnInsert": {"expires_at": now}},
                upsert=True, return_document=ReturnDocument.AFTER,
            )
        except DuplicateKeyError:
            return False
        return bool(doc and doc.get("lease_owner") == self._owner)

    async def _fetch_and_store(self) -> str:
        try:
            data = await self._http.json("GET", "/cgi-bin/token", params={
                "grant_type": "client_credential", "appid": self.appid, "secret": self._secret,
            })
            token = data["access_token"]
            expires_at = utcnow() + timedelta(seconds=int(data.get("expires_in", 7200)))
            await self._coll.update_one(
                {"_id": self.appid, "lease_owner": self._owner},
                {"$set": {"token": token, "expires_at": expires_at, "lease_until": None,
                          "fetched_at": utcnow()}},
            )
            log.info("access token for %s refreshed", self.appid)
            return token
        except BaseException:
            await self._coll.update_one(
                {"_id": self.appid, "lease_owner": self._owner}, {"$set": {"lease_until": None}},
            )
            raise
