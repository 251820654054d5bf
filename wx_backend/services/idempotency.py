"""``Idempotency-Key``: a repeated submission returns the first one's result, even when the
repeats arrive together.

The first request with a key claims it (an insert into ``idempotency_keys``, unique ``_id``)
with a fingerprint of its body; concurrent requests with the same key and body wait for the
first to finish and return its result; a request with the same key and a different body is
refused (422 ``idempotency_key_reused``). The claim is given back when the first request ends,
whatever the outcome (its result, if any, is then found by the caller's ``find_done``); a claim
left by a process that died is taken over after ``CLAIM_TTL``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import timedelta
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from ..db import utcnow
from ..errors import AppError, Conflict

CLAIM_TTL = timedelta(seconds=60)  # longer than any submission takes
WAIT = 20.0  # seconds a repeat waits for the first request to finish


class KeyReused(AppError):
    status = 422
    code = "idempotency_key_reused"
    message = "该 Idempotency-Key 已用于内容不同的另一次提交"


def fingerprint(body: Mapping[str, Any], ignore: tuple[str, ...] = ()) -> str:
    """A hash of the body's content (keys sorted), leaving out ``ignore`` (e.g. a one-time code)."""
    kept = {k: v for k, v in body.items() if k not in ignore}
    raw = json.dumps(kept, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(raw.encode()).hexdigest()


class Idempotency:
    def __init__(self, db: AsyncDatabase):
        self.coll = db.idempotency_keys

    async def claim(
        self, key: str, print_: str, find_done: Callable[[], Awaitable[dict[str, Any] | None]]
    ) -> dict[str, Any] | None:
        """The earlier result for ``key`` (``find_done``), or None once the caller holds the key
        and must do the work and then ``release`` it."""
        deadline = time.monotonic() + WAIT
        while True:
            done = await find_done()
            if done is not None:
                return done
            now = utcnow()
            try:
                await self.coll.insert_one({"_id": key, "fingerprint": print_, "at": now})
            except DuplicateKeyError:
                pass
            else:
                # the previous holder may have finished (result stored, claim released) between
                # the look above and this claim: its result wins
                done = await find_done()
                if done is not None:
                    await self.release(key)
                return done
            held = await self.coll.find_one({"_id": key})
            if held is None:
                continue  # released meanwhile: look for its result, or claim it
            if held["fingerprint"] != print_:
                raise KeyReused()
            if held["at"] < now - CLAIM_TTL:
                await self.coll.delete_one({"_id": key, "at": held["at"]})  # its holder died
                continue
            if time.monotonic() > deadline:
                raise Conflict("相同的提交正在处理中，请稍后查看", code="idempotency_in_progress")
            await asyncio.sleep(0.1)

    async def release(self, key: str) -> None:
        await self.coll.delete_one({"_id": key})
