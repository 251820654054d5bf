"""The services the import scripts call, built on the configured database (no HTTP)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import SimpleNamespace

from wx_backend import db as dbmod
from wx_backend.config import Config
from wx_backend.security import DataProtector
from wx_backend.services.accounts import AccountService
from wx_backend.services.billing import BillService
from wx_backend.services.usage import UsageService


def notifications_for(config: Config, database, notify: bool):
    """The notification service the scripts queue messages with (None: nothing is sent)."""
    return None


@asynccontextmanager
async def services(notify: bool) -> AsyncIterator[SimpleNamespace]:
    config = Config.from_env()
    client = dbmod.connect(config)
    try:
        database = client[config.db_name]
        await dbmod.ensure_indexes(database)
        accounts = AccountService(database, DataProtector(config.data_key_bytes))
        notifications = notifications_for(config, database, notify)
        yield SimpleNamespace(bills=BillService(database, accounts, notifications),
                              usage=UsageService(database, accounts))
    finally:
        await client.close()
