"""The services the import scripts call, built on the configured database (no HTTP)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from wx_backend.config import Config
from wx_backend.services.registry import Services


@asynccontextmanager
async def services() -> AsyncIterator[Services]:
    """The services (``services/registry.py``), with the indexes in place. Whether an import
    notifies is the import's own choice (``import_bills(..., notify=...)``): messages go into
    the outbox and the workers send them."""
    ctx = Services.connect(Config.from_env(), fail_fast=False)
    try:
        await ctx.ensure_indexes()
        yield ctx
    finally:
        await ctx.close()
