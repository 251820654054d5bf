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
from wx_backend.services.notifications import Notifications
from wx_backend.services.outbox import Outbox
from wx_backend.services.usage import UsageService
from wx_backend.wechat import WeChat


def notifications_for(config: Config, database, notify: bool) -> Notifications | None:
    """The notification service the scripts queue messages with (None: nothing is sent). Messages
    go into the outbox; the workers send them."""
    if not notify:
        return None
    return Notifications(database, Outbox(database), WeChat(config, database), config)


@asynccontextmanager
async def services(notify: bool) -> AsyncIterator[SimpleNamespace]:
    config = Config.from_env()
    client = dbmod.connect(config, fail_fast=False)
    try:
        database = client[config.db_name]
        await dbmod.ensure_indexes(database)
        accounts = AccountService(database, DataProtector(config.data_key_bytes))
        notifications = notifications_for(config, database, notify)
        yield SimpleNamespace(bills=BillService(database, accounts, notifications),
                              usage=UsageService(database, accounts))
    finally:
        await client.close()
