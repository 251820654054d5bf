"""Access tokens, cached in MongoDB and refreshed by one caller at a time.

WeChat issues a new token on every ``/cgi-bin/token`` call and retires the previous one
a few minutes later, so independent refreshers knock each other's tokens out (40001).
Here one refresher per token generation holds a lease (a unique document in
``wx_token_leases``) while it fetches; everyone else, in this process or another, waits
for the ``wx_tokens`` document to change. Callers in one process also share a single
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
        self._leases = db["wx_token_leases"]
        self._held: str | None = None
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
            generation = doc.get("generation", 0) if doc else 0
            if await self._acquire_lease(generation):
                # the token may have been stored between our read and our lease
                doc = await self._coll.find_one({"_id": self.appid})
                if self._fresh(doc, stale):
                    await self._release_lease(generation)
                    return doc["token"]
                return await self._fetch_and_store(generation)
            if asyncio.get_running_loop().time() > deadline:
                raise WeChatUnavailable(details={"reason": "access token refresh timed out"})
            await asyncio.sleep(0.05)

    def _lease_id(self, generation: int, attempt: int) -> str:
        return f"{self.appid}:{generation}:{attempt}"

    async def _acquire_lease(self, generation: int) -> bool:
        """One refresher per token generation, fenced by a unique insert.

        FerretDB applies a conditional update as read-then-replace, so two processes can
        both "win" a find-and-modify; an insert of the same _id cannot succeed twice. A
        lease left by a crashed refresher is superseded by the next attempt number once
        it is older than LEASE.
        """
        now = utcnow()
        attempt = 0
        while True:
            lease_id = self._lease_id(generation, attempt)
            try:
                await self._leases.insert_one({"_id": lease_id, "owner": self._owner, "at": now})
                self._held = lease_id
                return True
            except DuplicateKeyError:
                lease = await self._leases.find_one({"_id": lease_id})
                if lease is not None and now - lease["at"] < LEASE:
                    return False
                attempt += 1

    async def _release_lease(self, generation: int) -> None:
        if self._held:
            await self._leases.delete_one({"_id": self._held, "owner": self._owner})
            self._held = None

    async def _fetch_and_store(self, generation: int) -> str:
        try:
            data = await self._http.json("GET", "/cgi-bin/token", params={
                "grant_type": "client_credential", "appid": self.appid, "secret": self._secret,
            })
            token = data["access_token"]
            expires_at = utcnow() + timedelta(seconds=int(data.get("expires_in", 7200)))
            await self._coll.update_one(
                {"_id": self.appid},
                {"$set": {"token": token, "expires_at": expires_at, "generation": generation + 1,
                          "fetched_at": utcnow()}},
                upsert=True,
            )
            log.info("access token for %s refreshed", self.appid)
            return token
        finally:
            # safe to drop: a late caller holding the old generation re-reads the token
            # after taking a lease and finds it fresh
            await self._release_lease(generation)
