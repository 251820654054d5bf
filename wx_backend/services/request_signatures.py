"""Signed requests: the marketing system (``/internal/v1``) and, later, service-hall terminals.

The scheme (docs/internal-api.md): ``X-Timestamp`` (unix seconds), ``X-Nonce`` (8 to 64 characters,
never reused), ``X-Signature`` = lowercase hex HMAC-SHA256 over the method, the path, the
timestamp, the nonce and the SHA-256 of the body (``security.request_signature``).

A request is accepted when its timestamp is within ``window`` seconds of now, its signature
matches (constant-time comparison), and its nonce has not been seen in the same scope. The
nonce is claimed by inserting it under a unique index, so two processes receiving the same
request at once cannot both accept it: the second insert fails with ``DuplicateKeyError``.

A nonce needs remembering only while a request carrying it could still pass the timestamp
check: a request is accepted at most ``window`` seconds either side of its timestamp, so
``2 * window`` seconds (10 minutes) after the first claim no replay can pass anyway. There
are no TTL indexes: a record found expired is treated as absent, and expired nonces are
deleted here at most once a minute per process, and by the clean-up job (wx_backend/cleanup.py).
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from pymongo import IndexModel, ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from ..db import utcnow
from ..errors import Unauthorized
from ..security import request_signature
from ..validators import matches

log = logging.getLogger(__name__)

INDEXES = {
    "request_nonces": [
        IndexModel([("scope", 1), ("nonce", 1)], unique=True),
        IndexModel([("expires_at", 1)]),
    ],
}


class SignatureRejected(Unauthorized):
    """401: the request is not signed, signed wrongly, too old, or replayed. Nothing was done."""

    code = "signature_invalid"
    message = "请求签名无效"


def _reject(code: str, message: str) -> SignatureRejected:
    return SignatureRejected(message, code=code)


class RequestVerifier:
    """Checks signed requests; one instance per process (``app.verifier``)."""

    def __init__(self, db: AsyncDatabase, *, window: int = 300, cleanup_every: float = 60.0):
        self.db = db
        self.window = window
        self.nonce_ttl = 2 * window
        self.cleanup_every = cleanup_every
        self._last_cleanup = 0.0

    async def verify(
        self, secret: str, method: str, path: str, headers: Mapping[str, str], body: bytes, scope: str = "internal"
    ) -> None:
        """Accept the request or raise ``SignatureRejected`` (401).

        ``secret`` is the shared key of the caller (the internal secret, or a terminal's own
        key looked up by ``X-Terminal-Id``); ``path`` is the URL path without the query string,
        exactly as sent; ``scope`` separates nonce spaces (``"internal"``, ``"terminal:T01"``).
        The nonce is claimed only after the signature is proven, so a forger cannot burn the
        nonces of genuine requests.
        """
        timestamp = headers.get("X-Timestamp") or ""
        nonce = headers.get("X-Nonce") or ""
        signature = headers.get("X-Signature") or ""
        if not (timestamp and nonce and signature):
            raise _reject("signature_missing", "请求缺少签名（X-Timestamp、X-Nonce、X-Signature）")
        if not matches("timestamp", timestamp):
            raise _reject("signature_invalid", "X-Timestamp 必须是 Unix 秒数")
        if not matches("nonce", nonce):
            raise _reject("signature_invalid", "X-Nonce 必须是 8 至 64 位字母、数字或 ._~-")
        now = time.time()
        if abs(now - int(timestamp)) > self.window:
            raise _reject("signature_expired", "请求已过期，请校准时钟后重新签名发送")
        expected = request_signature(secret, method, path, timestamp, nonce, body)
        # compare bytes: compare_digest refuses non-ASCII str, and a forged header may contain any
        given = signature.encode("utf-8", "replace")
        if not (matches("signature", signature) and hmac.compare_digest(expected.encode(), given)):
            raise _reject("signature_invalid", "请求签名无效")
        await self._claim_nonce(scope, nonce)
        await self._cleanup(now)

    async def _claim_nonce(self, scope: str, nonce: str) -> None:
        now = utcnow()
        expires_at = now + timedelta(seconds=self.nonce_ttl)
        try:
            await self.db.request_nonces.insert_one(
                {"scope": scope, "nonce": nonce, "created_at": now, "expires_at": expires_at},
            )
            return
        except DuplicateKeyError:
            pass
        # a record past its expiry may still be there (cleanup is lazy): reclaim it atomically
        reclaimed = await self.db.request_nonces.find_one_and_update(
            {"scope": scope, "nonce": nonce, "expires_at": {"$lte": now}},
            {"$set": {"created_at": now, "expires_at": expires_at}},
            return_document=ReturnDocument.AFTER,
        )
        if reclaimed is None:
            raise _reject("nonce_replayed", "重复的请求（X-Nonce 已使用）")

    async def _cleanup(self, now: float) -> None:
        if now - self._last_cleanup < self.cleanup_every:
            return
        self._last_cleanup = now
        result = await self.db.request_nonces.delete_many(
            {"expires_at": {"$lt": datetime.fromtimestamp(now, UTC)}},
        )
        if result.deleted_count:
            log.debug("forgot %d expired nonces", result.deleted_count)
