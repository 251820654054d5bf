"""The MongoDB client, index creation, and GridFS.

A service module that owns collections declares ``INDEXES = {"collection": [IndexModel(...), ...]}``;
the service registry (``services/registry.py``) hands them all to ``ensure_indexes`` at start-up,
which creates them idempotently.
The embedded FerretDB keeps MongoDB's single-document promises but has no multi-document
transactions and no TTL indexes: every rule here relies on single-document atomic updates and
unique indexes, and expiry is a field that readers check (docs/storage.md).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pymongo
from gridfs import AsyncGridFSBucket
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from .config import Config

log = logging.getLogger(__name__)


def utcnow() -> datetime:
    """Now, in UTC, at millisecond precision (what BSON stores)."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


INDEX_TIMEOUT = 300.0  # seconds an index build may take at start-up (a large collection on a busy server)


def connect(config: Config, fail_fast: bool = True) -> AsyncMongoClient:
    """The client. ``fail_fast`` (the service's processes): every operation, retries and server
    selection included, ends within ``WX_DB_TIMEOUT_MS`` (``timeoutMS``), so a server that
    accepts connections but does not answer (hung, stopped, overloaded) costs a request at most
    that long before its 503. Batch and admin scripts pass ``fail_fast=False``: only selecting a server and
    connecting are bounded, and a long bulk write is left to finish. (With ``timeoutMS`` every
    command carries ``maxTimeMS``, which FerretDB 1.24 refuses on ``distinct``: use ``find``.)"""
    options: dict[str, Any] = {
        "tz_aware": True,
        "serverSelectionTimeoutMS": config.db_timeout_ms,
        "connectTimeoutMS": config.db_timeout_ms,
        "appname": "wx-backend",
    }
    if fail_fast:
        options["timeoutMS"] = config.db_timeout_ms
    return AsyncMongoClient(config.mongodb_uri, **options)


async def ensure_indexes(db: AsyncDatabase, wanted: dict[str, list]) -> None:
    """Create the ``wanted`` indexes (``{"collection": [IndexModel, ...]}``), idempotently."""
    for collection, models in wanted.items():
        # one at a time: FerretDB 1.24 drops the connection when a multi-index
        # createIndexes names only indexes that already exist
        for model in models:
            with pymongo.timeout(INDEX_TIMEOUT):  # not the request's fail-fast bound
                await db[collection].create_indexes([model])
    log.info("indexes ready on %d collections", len(wanted))


def files(db: AsyncDatabase) -> AsyncGridFSBucket:
    """GridFS bucket for uploads, seal images and contract PDFs."""
    return AsyncGridFSBucket(db, bucket_name="files")


async def stream_file(bucket: AsyncGridFSBucket, file_id: Any) -> tuple[int, AsyncIterator[bytes]]:
    """``(length, chunks)`` of a stored file, read chunk by chunk as the response is written;
    ``gridfs.errors.NoFile`` if there is none."""
    stream = await bucket.open_download_stream(file_id)

    async def chunks() -> AsyncIterator[bytes]:
        try:
            while chunk := await stream.readchunk():
                yield chunk
        finally:
            await stream.close()

    return stream.length, chunks()
