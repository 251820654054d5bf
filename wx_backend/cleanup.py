"""The clean-up the database cannot do by itself: it has no TTL indexes.

``python -m wx_backend.cleanup`` runs it every ``WX_CLEANUP_INTERVAL`` seconds (``--once``: one
pass, for cron); with ``WX_EMBEDDED_WORKERS`` the web process runs it too. Any number may run:
each pass is a few ``delete_many`` whose filters only ever match what no reader uses any more.
Readers never depend on it: every expiring record carries ``expires_at`` and is checked.

What goes, each pass:

- ``sessions``, ``web_sessions``, ``request_nonces``, ``sms_codes``: past their ``expires_at``;
- ``rate_limits``: not touched for ``RATE_LIMIT_KEEP`` (their hour or day is long over);
- ``locks``, ``outbox_claims``, ``contract_locks``, ``wx_token_leases``: the claim records of an
  earlier storage design; nothing reads or writes them now.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from datetime import datetime, timedelta

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError

from . import db as dbmod
from . import logs
from .config import Config, ConfigError
from .signals import run_until_stopped

log = logging.getLogger(__name__)

EXPIRING = ("sessions", "web_sessions", "request_nonces", "sms_codes")
RATE_LIMIT_KEEP = timedelta(days=2)  # the longest rate-limit period is a day
RETIRED = ("locks", "outbox_claims", "contract_locks", "wx_token_leases")


async def sweep(db: AsyncDatabase, now: datetime | None = None) -> dict[str, int]:
    """One pass: how many documents went, by collection."""
    now = now or dbmod.utcnow()
    removed: dict[str, int] = {}
    for name in EXPIRING:
        removed[name] = (await db[name].delete_many({"expires_at": {"$lt": now}})).deleted_count
    removed["rate_limits"] = (
        await db.rate_limits.delete_many({"last_at": {"$lt": now - RATE_LIMIT_KEEP}})
    ).deleted_count
    for name in RETIRED:
        removed[name] = (await db[name].delete_many({})).deleted_count
    return removed


async def run_forever(db: AsyncDatabase, interval: float) -> None:
    """``sweep`` every ``interval`` seconds until cancelled, the first one interval after start."""
    log.info("clean-up started (every %.0f s)", interval)
    while True:
        await asyncio.sleep(interval)
        try:
            removed = {k: v for k, v in (await sweep(db)).items() if v}
            if removed:
                log.info("clean-up removed %s", removed)
        except PyMongoError as exc:
            log.warning("clean-up: database error %s", type(exc).__name__)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--once", action="store_true", help="one pass, print what went, exit")
    args = parser.parse_args()
    try:
        config = Config.from_env()
    except ConfigError as exc:
        raise SystemExit(f"configuration error: {exc}") from None
    logs.setup(config.log_level)
    client = dbmod.connect(config)
    try:
        db = client[config.db_name]
        if args.once:
            removed = await sweep(db)
            print(" ".join(f"{k}={v}" for k, v in removed.items()))
        else:
            await run_until_stopped(run_forever(db, config.cleanup_interval))
    finally:
        await client.close()


if __name__ == "__main__":
    asyncio.run(main())
