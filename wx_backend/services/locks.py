"""Leased locks decided by unique inserts, for storage whose updates are not atomic.

FerretDB 1.24 applies an update by reading the document, changing it and writing it back
whole, without checking that nobody wrote in between: two concurrent ``$inc`` lose one
increment, and two concurrent conditional updates can both "win". Only a unique index is
enforced atomically. So anything that reads and rewrites a shared document (an account's
balance, its bills) is done by one holder at a time, under one of these locks.

A lock on ``key`` is a document ``{_id: "<key>:<epoch>"}``. To take it, a caller reads the
newest epoch: if that one is still within its lease the lock is held; otherwise (released,
or its holder died and the lease ran out) the caller inserts epoch + 1, and the unique
``_id`` lets exactly one contender succeed. Releasing deletes the holder's own document.
A holder must finish well within its lease; leases are sized for that.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from datetime import timedelta

from pymongo import DESCENDING, IndexModel
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from ..db import utcnow

INDEXES = {"locks": [IndexModel([("key", 1), ("epoch", DESCENDING)])]}


class Locks:
    def __init__(self, db: AsyncDatabase):
        self.coll = db["locks"]
        self.owner = f"{os.uname().nodename}:{os.getpid()}"

    async def acquire(self, key: str, lease: float, wait: float = 0.0) -> str | None:
        """Take the lock for ``lease`` seconds, waiting up to ``wait``; its token, or ``None``."""
        deadline = time.monotonic() + wait
        while True:
            now = utcnow()
            newest = await self.coll.find({"key": key}).sort("epoch", DESCENDING).limit(1).to_list(1)
            if not newest or newest[0]["until"] <= now:
                epoch = newest[0]["epoch"] + 1 if newest else 1
                token = f"{key}:{epoch}"
                try:
                    await self.coll.insert_one({"_id": token, "key": key, "epoch": epoch, "owner": self.owner,
                                                "nonce": secrets.token_hex(4), "at": now,
                                                "until": now + timedelta(seconds=lease)})
                except DuplicateKeyError:
                    pass
                else:
                    if newest:  # the previous holder's record: released late or dead
                        await self.coll.delete_many({"key": key, "epoch": {"$lt": epoch}})
                    return token
            if time.monotonic() >= deadline:
                return None
            await asyncio.sleep(0.005 + secrets.randbelow(25) / 1000)

    async def release(self, token: str) -> None:
        await self.coll.delete_one({"_id": token})
