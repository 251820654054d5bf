"""The one place the services are built from configuration, and the indexes they declare.

``Services`` holds the database, the WeChat gateway and every service; each service is built
the first time it is used, from the configuration and the services it needs, so an admin
script that only reads work orders does not start a document pool. The web process
(``Application``), the workers, the payment follow-up, the demo data and the scripts all take
their services from here: there is no second way to wire them, and notifications and the outbox
are always present (a service never quietly skips telling the customer or the marketing system).

To add a service: import its class here, add a ``cached_property`` that builds it from
``self.config``, ``self.db`` and the services it needs, and add its module to ``INDEX_MODULES``
if it declares ``INDEXES``. The web process reaches it as ``self.application.<name>``
(``Application.__getattr__``).

Indexes: a module that owns collections declares ``INDEXES = {"collection": [IndexModel(...)]}``;
``INDEX_MODULES`` lists those modules and ``indexes()`` hands the union to ``db.ensure_indexes``.
"""

from __future__ import annotations

from functools import cached_property
from types import ModuleType
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from .. import db as dbmod
from ..config import Config
from ..pdfjobs import DocumentPool
from ..security import DataProtector
from ..wechat import WeChat
from ..wechat.pay import PayCall
from . import (
    account_finder,
    accounts,
    applications,
    billing,
    contracts,
    invoices,
    official_account,
    outages,
    outbox,
    payments,
    request_signatures,
    revocation,
    seals,
    sms,
    supply,
    terminals,
    uploads,
    usage,
    users,
    web_sessions,
)
from .account_finder import AccountFinder
from .accounts import AccountService
from .applications import ApplicationService
from .billing import BillService
from .binding_prefs import BindingPreferences
from .catalog import default_dirs, load_catalog
from .contracts import ContractService
from .invoices import InvoiceService
from .mail import MailSender
from .mail import check_config as check_mail
from .notifications import Notifications
from .official_account import OfficialAccountService
from .outages import OutageService
from .outbox import Outbox
from .payments import PaymentService
from .phones import PhoneService
from .request_signatures import RequestVerifier
from .revocation import RevocationService
from .sealauthority import AuthorityStore
from .sealauthority import check_config as check_seal_authority
from .seals import SealService
from .sms import SmsService, make_provider
from .supply import SupplyService
from .terminals import TerminalService
from .timestamping import Timestamping
from .uploads import UploadService
from .usage import UsageService
from .users import UserService
from .web_sessions import WebSessions
from .webhook import WebhookSender

INDEX_MODULES: tuple[ModuleType, ...] = (
    account_finder,
    accounts,
    applications,
    billing,
    contracts,
    invoices,
    official_account,
    outages,
    outbox,
    payments,
    request_signatures,
    revocation,
    seals,
    sms,
    supply,
    terminals,
    uploads,
    usage,
    users,
    web_sessions,
)


def indexes() -> dict[str, list]:
    """Every declared index, by collection."""
    wanted: dict[str, list] = {}
    for module in INDEX_MODULES:
        for collection, models in module.INDEXES.items():
            wanted.setdefault(collection, []).extend(models)
    return wanted


async def ensure_indexes(db: AsyncDatabase) -> None:
    """Create every declared index (idempotent)."""
    await dbmod.ensure_indexes(db, indexes())


class Services:
    """The database, the WeChat gateway and the services, built from one configuration."""

    def __init__(self, config: Config, client: Any, *, owns_client: bool = True):
        self.config = config
        self.client = client
        self.db: AsyncDatabase = client[config.db_name]
        self._owns_client = owns_client

    @classmethod
    def connect(cls, config: Config, *, fail_fast: bool = True) -> Services:
        """A new database client (closed by ``close``) and the services on it. Admin and batch
        scripts pass ``fail_fast=False`` (``db.connect``) and ``WX_DOCUMENT_WORKERS=0``
        (``Config.from_env(document_workers=0)``: PDFs rendered in the script's own process)."""
        return cls(config, dbmod.connect(config, fail_fast))

    def build_all(self) -> Services:
        """Check the settings and build every service now: the web process stops at start-up on
        a malformed setting (seal authority, mail, SMS, the catalogue files) rather than on first use."""
        check_seal_authority(self.config)
        check_mail(self.config)
        for name, value in vars(Services).items():
            if isinstance(value, cached_property):
                getattr(self, name)
        return self

    async def ensure_indexes(self) -> None:
        await ensure_indexes(self.db)

    async def close(self) -> None:
        if self._owns_client:
            await self.client.close()

    # -- WeChat and shared pieces ---------------------------------------------------------------
    @cached_property
    def wechat(self) -> WeChat:
        wechat = WeChat(self.config, self.db)
        wechat.pay.on_call = self._record_pay_call  # every Pay call kept with its order
        return wechat

    async def _record_pay_call(self, call: PayCall) -> None:
        await self.payments.record_call(call)

    @cached_property
    def protector(self) -> DataProtector:
        return DataProtector(self.config.data_key_bytes)

    @cached_property
    def catalog(self) -> Any:
        return load_catalog(*default_dirs(self.config.catalog_dir))

    @cached_property
    def documents(self) -> DocumentPool:
        return DocumentPool(self.config.document_workers)

    @cached_property
    def verifier(self) -> RequestVerifier:
        return RequestVerifier(self.db)

    # -- messages: the outbox and what it sends --------------------------------------------------
    @cached_property
    def outbox(self) -> Outbox:
        return Outbox(self.db)

    @cached_property
    def notifications(self) -> Notifications:
        return Notifications(self.db, self.outbox, self.wechat, self.config)

    @cached_property
    def official_account(self) -> OfficialAccountService:
        return OfficialAccountService(self.db, self.wechat, self.outbox, self.config)

    @cached_property
    def webhook(self) -> WebhookSender:
        return WebhookSender(self.config)

    @cached_property
    def mail(self) -> MailSender:
        return MailSender(self.config, self.invoices)

    # -- customers and their accounts ------------------------------------------------------------
    @cached_property
    def users(self) -> UserService:
        return UserService(self.db, self.wechat, self.config.session_ttl)

    @cached_property
    def web_sessions(self) -> WebSessions:
        """The official account's pages: web login, sessions and CSRF tokens."""
        return WebSessions(self.db, self.wechat, self.config)

    @cached_property
    def sms(self) -> SmsService:
        return SmsService(self.db, self.protector, make_provider(self.config))

    @cached_property
    def accounts(self) -> AccountService:
        return AccountService(self.db, self.protector, self.sms)

    @cached_property
    def phones(self) -> PhoneService:
        return PhoneService(self.db, self.protector, self.wechat, self.config.mp_appid)

    @cached_property
    def finder(self) -> AccountFinder:
        return AccountFinder(self.db, self.accounts, self.phones)

    @cached_property
    def binding_prefs(self) -> BindingPreferences:
        return BindingPreferences(self.db, self.accounts)

    # -- bills, usage, outages, supply -----------------------------------------------------------
    @cached_property
    def bills(self) -> BillService:
        return BillService(self.db, self.accounts, self.notifications)

    @cached_property
    def usage(self) -> UsageService:
        return UsageService(self.db, self.accounts)

    @cached_property
    def outages(self) -> OutageService:
        return OutageService(self.db, self.accounts, self.notifications)

    @cached_property
    def supply(self) -> SupplyService:
        return SupplyService(self.db, self.accounts, self.notifications, self.outbox, self.config)

    # -- payments and invoices -------------------------------------------------------------------
    @cached_property
    def payments(self) -> PaymentService:
        return PaymentService(self.db, self.wechat.pay, self.accounts, self.config, self.outbox, self.notifications)

    @cached_property
    def terminals(self) -> TerminalService:
        return TerminalService(self.db, self.protector, self.verifier)

    @cached_property
    def invoices(self) -> InvoiceService:
        return InvoiceService(
            self.db,
            self.protector,
            self.outbox,
            self.notifications,
            self.accounts,
            self.config.upload_max_bytes,
            bool(self.config.smtp_url),
        )

    # -- applications, seals, contracts ----------------------------------------------------------
    @cached_property
    def uploads(self) -> UploadService:
        return UploadService(self.db, self.catalog, self.config.upload_max_bytes)

    @cached_property
    def applications(self) -> ApplicationService:
        return ApplicationService(
            self.db,
            self.catalog,
            self.protector,
            accounts=self.accounts,
            uploads=self.uploads,
            sms=self.sms,
            outbox=self.outbox,
            notifications=self.notifications,
        )

    @cached_property
    def seal_authority(self) -> AuthorityStore:
        return AuthorityStore(self.db, self.protector, self.config)

    @cached_property
    def revocation(self) -> RevocationService:
        return RevocationService(self.db, self.seal_authority)

    @cached_property
    def seals(self) -> SealService:
        return SealService(self.db, self.protector, self.sms, self.uploads, self.seal_authority, self.documents)

    @cached_property
    def contracts(self) -> ContractService:
        return ContractService(
            self.db,
            self.seals,
            self.seal_authority,
            self.documents,
            self.uploads,
            applications=self.applications,
            outbox=self.outbox,
            notifications=self.notifications,
            timestamping=Timestamping.from_config(self.config),
            revocation=self.revocation,
        )
