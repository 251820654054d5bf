"""Background workers: the outbox sender and the periodic supply jobs (reconnection requests,
overdue reminders, every ``WX_SUPPLY_INTERVAL`` seconds). ``python -m wx_backend.workers`` runs them alone;
with ``WX_EMBEDDED_WORKERS`` they also run inside the web process (``Application.startup``).

Any number of worker processes may run against one database: a message is claimed by one
of them at a time (``Outbox.claim``), and a claim that outlives its lease (the worker died)
is taken over by another.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
from typing import Any

from pymongo.errors import PyMongoError

from . import cleanup, logs
from .config import Config, ConfigError
from .db import utcnow
from .services.mail import MailSender
from .services.notifications import Notifications, Outcome, attempt, backoff
from .services.outbox import Outbox
from .services.registry import Services
from .services.supply import SupplyService
from .services.webhook import WebhookSender
from .signals import run_until_stopped

log = logging.getLogger(__name__)


class OutboxWorker:
    """Claims due outbox messages and sends them, ``concurrency`` at a time."""

    def __init__(
        self,
        config: Config,
        outbox: Outbox,
        notifications: Notifications,
        webhook: WebhookSender,
        mail: MailSender | None = None,
    ):
        self.config = config
        self.outbox = outbox
        self.senders = {"notify": notifications, "webhook": webhook, "email": mail}
        self.owner = f"{os.uname().nodename}:{os.getpid()}:{secrets.token_hex(3)}"
        self._wake = asyncio.Event()

    async def run(self) -> None:
        """Claim what is due in batches and send up to ``concurrency`` messages at once."""
        limit = max(1, self.config.outbox_concurrency)
        log.info("outbox worker %s started (%d at a time)", self.owner, limit)
        running: set[asyncio.Task] = set()
        try:
            while True:
                docs = []
                if len(running) < limit:
                    try:
                        docs = await self.outbox.claim(self.owner, self.config.outbox_lease, limit - len(running))
                    except PyMongoError as exc:
                        log.warning("outbox worker: database error %s", type(exc).__name__)
                for doc in docs:
                    task = asyncio.create_task(self.process(doc))
                    running.add(task)
                    task.add_done_callback(running.discard)
                if docs and len(running) < limit:
                    continue
                wait = self.config.outbox_poll * (0.5 + secrets.randbelow(1000) / 1000)
                if running:
                    await asyncio.wait(running, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
                else:
                    await asyncio.sleep(wait)
        finally:
            for task in running:
                task.cancel()

    async def run_once(self) -> bool:
        """Claim and send one message now; ``False`` when none is due."""
        docs = await self.outbox.claim(self.owner, self.config.outbox_lease, 1)
        for doc in docs:
            await self.process(doc)
        return bool(docs)

    async def process(self, doc: dict[str, Any]) -> None:
        sender = self.senders.get(doc["kind"])
        try:
            outcome = await sender.deliver(doc) if sender else Outcome("failed", [attempt("none", "unknown_kind")])
        except PyMongoError as exc:
            log.warning(
                "outbox %s: database error %s; the lease will run out and it is tried again",
                doc["_id"],
                type(exc).__name__,
            )
            return
        except Exception as exc:
            log.exception("outbox %s: sending failed unexpectedly", doc["_id"])
            outcome = Outcome("retry", [attempt(doc["kind"], "error", detail=type(exc).__name__)])
        try:
            await self._record(doc, outcome)
        except PyMongoError as exc:
            log.warning("outbox %s: could not record %s (%s)", doc["_id"], outcome.status, type(exc).__name__)

    async def _record(self, doc: dict[str, Any], outcome: Outcome) -> None:
        if outcome.status == "retry":
            tries = doc.get("tries", 0) + (1 if outcome.count_try else 0)
            if outcome.count_try and tries >= self.config.outbox_max_tries:
                ok = await self.outbox.finish(doc, self.owner, "failed", outcome.attempts, outcome.fields)
            else:
                when = outcome.retry_at or utcnow() + backoff(tries, self.config.outbox_retry_base)
                ok = await self.outbox.retry_at(
                    doc, self.owner, when, outcome.attempts, outcome.fields, count_try=outcome.count_try
                )
        else:
            ok = await self.outbox.finish(doc, self.owner, outcome.status, outcome.attempts, outcome.fields)
        if not ok:
            log.warning("outbox %s: claim lost before recording %s", doc["_id"], outcome.status)
        else:
            log.info("outbox %s %s -> %s", doc["kind"], doc["dedupe_key"], outcome.status)
            fields = outcome.fields
            if outcome.status == "sent" and fields.get("msgid") and fields.get("channel") == "official_account":
                await self.outbox.sent_template(outcome.fields["msgid"], doc["_id"])


class Worker:
    """The outbox worker and the periodic jobs, run side by side."""

    def __init__(self, outbox_worker: OutboxWorker, supply: SupplyService, interval: float):
        self.outbox_worker = outbox_worker
        self.supply = supply
        self.interval = interval

    async def run(self) -> None:
        await asyncio.gather(self.outbox_worker.run(), self.run_jobs())

    async def run_jobs(self) -> None:
        """Every ``interval`` seconds one pass of the supply jobs; a failed pass is tried next time."""
        while True:
            try:
                await self.supply.run_jobs()
            except PyMongoError as exc:
                log.warning("supply jobs: database error %s", type(exc).__name__)
            except Exception:
                log.exception("supply jobs failed unexpectedly")
            await asyncio.sleep(self.interval)


def build(services: Services) -> Worker:
    sender = OutboxWorker(services.config, services.outbox, services.notifications, services.webhook, services.mail)
    return Worker(sender, services.supply, services.config.supply_interval)


async def main() -> None:
    try:
        config = Config.from_env()
    except ConfigError as exc:
        raise SystemExit(f"configuration error: {exc}") from None
    logs.setup(config.log_level)
    services = Services.connect(config)
    while True:
        try:
            await services.ensure_indexes()  # the dedupe keys rely on them
            break
        except PyMongoError as exc:
            log.warning("database not ready (%s); retrying", type(exc).__name__)
            await asyncio.sleep(1)
    worker = build(services)
    await run_until_stopped(asyncio.gather(worker.run(), cleanup.run_forever(services.db, config.cleanup_interval)))
    await services.close()


if __name__ == "__main__":
    asyncio.run(main())
