"""The Tornado ``Application``: owns the database client, the WeChat gateway and the services.

Routes come from the ``handlers`` package (the HTTP layer), passed in by the entry point,
so this module never imports the layer above it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import tornado.web
from pymongo.errors import PyMongoError

from . import db as dbmod
from .bodies import BoundedBody
from .config import Config
from .logs import request_id
from .pdfjobs import DocumentPool
from .security import DataProtector
from .services.account_finder import AccountFinder
from .services.accounts import AccountService
from .services.applications import ApplicationService
from .services.billing import BillService
from .services.binding_prefs import BindingPreferences
from .services.catalog import default_dirs, load_catalog
from .services.contracts import ContractService
from .services.invoices import InvoiceService
from .services.mail import check_config as check_mail
from .services.notifications import Notifications
from .services.official_account import OfficialAccountService
from .services.outages import OutageService
from .services.outbox import Outbox
from .services.payments import PaymentService
from .services.phones import PhoneService
from .services.revocation import RevocationService
from .services.sealauthority import AuthorityStore, check_config
from .services.seals import SealService
from .services.signing import RequestVerifier
from .services.sms import SmsService, make_provider
from .services.supply import SupplyService
from .services.terminals import TerminalService
from .services.timestamping import Timestamping
from .services.uploads import UploadService
from .services.usage import UsageService
from .services.users import UserService
from .services.web_sessions import WebSessions
from .wechat import WeChat

log = logging.getLogger(__name__)


class Application(tornado.web.Application):
    def __init__(self, config: Config, routes: list, *, fail_fast: bool = True, **settings: Any):
        self.config = config
        self.client = dbmod.connect(config, fail_fast)  # admin scripts pass fail_fast=False
        self.db = self.client[config.db_name]
        self.wechat = WeChat(config, self.db)
        self.users = UserService(self.db, self.wechat, config.session_ttl)
        self.web_sessions = WebSessions(self.db, self.wechat, config)  # the official account's pages
        self.outbox = Outbox(self.db)
        self.notifications = Notifications(self.db, self.outbox, self.wechat, config)
        self.official_account = OfficialAccountService(self.db, self.wechat, self.outbox, config)
        self.catalog = load_catalog(*default_dirs(config.catalog_dir))
        self.uploads = UploadService(self.db, self.catalog, config.upload_max_bytes)
        self.protector = DataProtector(config.data_key_bytes)
        self.verifier = RequestVerifier(self.db)
        self.sms = SmsService(self.db, self.protector, make_provider(config))
        self.accounts = AccountService(self.db, self.protector, self.sms)
        self.phones = PhoneService(self.db, self.protector, self.wechat, config.mp_appid)
        self.finder = AccountFinder(self.db, self.accounts, self.phones)
        self.binding_prefs = BindingPreferences(self.db, self.accounts)
        self.applications = ApplicationService(
            self.db, self.catalog, self.protector, accounts=self.accounts, uploads=self.uploads, sms=self.sms,
            outbox=self.outbox, notifications=self.notifications,
        )
        self.bills = BillService(self.db, self.accounts, self.notifications)
        self.usage = UsageService(self.db, self.accounts)
        self.outages = OutageService(self.db, self.accounts, self.notifications)
        self.terminals = TerminalService(self.db, self.protector, self.verifier)
        self.payments = PaymentService(self.db, self.wechat.pay, self.accounts, config,
                                       self.outbox, self.notifications)
        self.wechat.pay.on_call = self.payments.record_call
        self.supply = SupplyService(self.db, self.accounts, self.notifications, self.outbox, config)
        self.invoices = InvoiceService(self.db, self.protector, self.outbox, self.notifications, self.accounts,
                                       config.upload_max_bytes, bool(config.smtp_url))
        check_config(config)
        check_mail(config)
        self.documents = DocumentPool(config.document_workers)
        self.seal_authority = AuthorityStore(self.db, self.protector, config)
        self.revocation = RevocationService(self.db, self.seal_authority)
        self.seals = SealService(self.db, self.protector, self.sms, self.uploads, self.seal_authority, self.documents)
        self.contracts = ContractService(
            self.db, self.seals, self.seal_authority, self.documents, self.uploads, applications=self.applications,
            outbox=self.outbox, notifications=self.notifications,
            timestamping=Timestamping.from_config(config), revocation=self.revocation,
        )
        self._tasks: list[asyncio.Task] = []
        settings.setdefault("log_function", _log_request)
        settings.setdefault("xheaders", False)  # forwarded headers are read only from trusted proxies
        super().__init__(routes, **settings)

    def start_request(self, server_conn: object, request_conn: Any) -> Any:
        # every request's body is held to its handler's max_body_bytes (bodies.py)
        return BoundedBody(super().start_request(server_conn, request_conn), request_conn)

    async def startup(self) -> None:
        self._tasks.append(asyncio.create_task(self._prepare_database()))
        if self.config.embedded_workers:
            from .workers import build  # the worker imports the services, not the other way round

            self._tasks.append(asyncio.create_task(build(self.config, self.db, self.wechat).run()))
            from .payment_followup import run_forever

            self._tasks.append(asyncio.create_task(run_forever(self.payments, self.config.pay_followup_interval)))
            from . import cleanup

            self._tasks.append(asyncio.create_task(cleanup.run_forever(self.db, self.config.cleanup_interval)))

    async def _prepare_database(self) -> None:
        # The process starts even while the database is down: /readyz says 503 until it is back.
        delay = 0.5
        while True:
            try:
                await dbmod.ensure_indexes(self.db)
                return
            except PyMongoError as exc:
                log.warning("database not ready (%s); retrying", type(exc).__name__)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10)

    async def shutdown(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.client.close()


def _log_request(handler: tornado.web.RequestHandler) -> None:
    status = handler.get_status()
    level = logging.INFO if status < 400 else logging.WARNING if status < 500 else logging.ERROR
    req = handler.request
    token = request_id.set(handler._headers.get("X-Request-Id", "-"))
    try:
        # the path only: query strings may carry codes or signatures
        logging.getLogger("access").log(
            level, "%s %s %d %.1fms", req.method, req.path, status, 1000.0 * req.request_time(),
        )
    finally:
        request_id.reset(token)
