"""Configuration from the environment (``WX_*`` variables and ``MONGODB_URI``).

Every setting has one name, one parser and one line of documentation in ``SETTINGS``;
``docs/configuration.md`` and the README table are written from the same list. Development
defaults exist only for ``WX_ENV=dev``: anywhere else a missing secret stops start-up.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass
from typing import Any


class ConfigError(Exception):
    """A setting is missing or malformed; the message says which and how to fix it."""


@dataclass(frozen=True)
class Setting:
    env: str
    default: Any
    doc: str
    dev_default: Any = None  # used only when WX_ENV=dev
    secret: bool = False
    parse: Any = str


def _bool(value: str) -> bool:
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _csv(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def _choice(value: str, allowed: tuple[str, ...]) -> str:
    value = value.strip().lower()
    if value not in allowed:
        raise ValueError(f"must be one of {', '.join(allowed)}")
    return value


# The development values below are published on purpose: they only ever unlock the
# local sandbox. Outside WX_ENV=dev they are never used.
_DEV_DATA_KEY = base64.b64encode(b"dev-data-key-not-for-production!").decode()

SETTINGS: dict[str, Setting] = {
    "env": Setting("WX_ENV", "prod", "dev, test or prod; dev enables the development defaults below"),
    "bind": Setting("WX_BIND", "127.0.0.1", "address the HTTP servers listen on"),
    "port": Setting("WX_PORT", 8000, "port of the backend", parse=int),
    "sandbox_port": Setting("WX_SANDBOX_PORT", 8900, "port of the WeChat sandbox", parse=int),
    "mongodb_uri": Setting(
        "MONGODB_URI",
        None,
        "MongoDB connection string (FerretDB or MongoDB)",
        dev_default="mongodb://127.0.0.1:27017/",
    ),
    "db_name": Setting("WX_DB_NAME", "wx_backend", "database name"),
    "db_timeout_ms": Setting(
        "WX_DB_TIMEOUT_MS",
        2000,
        "longest a database operation may take, retries and waiting for the answer included; then 503",
        parse=int,
    ),
    "internal_secret": Setting(
        "WX_INTERNAL_SECRET",
        None,
        "HMAC secret shared with the marketing system (/internal/v1)",
        dev_default="dev-internal-secret",
        secret=True,
    ),
    "data_key": Setting(
        "WX_DATA_KEY",
        None,
        "base64 of 32 random bytes; encrypts ID numbers, phones and seal keys at rest (AES-GCM)",
        dev_default=_DEV_DATA_KEY,
        secret=True,
    ),
    "session_ttl": Setting("WX_SESSION_TTL", 7 * 24 * 3600, "login token lifetime in seconds", parse=int),
    "wechat_api_base": Setting(
        "WX_WECHAT_API_BASE",
        "https://api.weixin.qq.com",
        "base URL of WeChat's official-account and mini-program API",
        dev_default="http://127.0.0.1:8900",
    ),
    "wechat_pay_base": Setting(
        "WX_WECHAT_PAY_BASE",
        "https://api.mch.weixin.qq.com",
        "base URL of WeChat Pay (API v2 and v3)",
        dev_default="http://127.0.0.1:8900",
    ),
    "wechat_timeout": Setting(
        "WX_WECHAT_TIMEOUT",
        5.0,
        "seconds before a WeChat call counts as timed out",
        parse=float,
    ),
    "oauth_base": Setting(
        "WX_OAUTH_BASE",
        "https://open.weixin.qq.com",
        "base URL of WeChat's web authorization page (connect/oauth2/authorize) for the official-account pages",
        dev_default="http://127.0.0.1:8900",
    ),
    "h5_bridge_standin": Setting(
        "WX_H5_BRIDGE_STANDIN",
        "",
        "dev/test only: URL of the sandbox's WeixinJSBridge stand-in script that the payment page loads "
        "outside WeChat; refused with WX_ENV=prod",
        dev_default="http://127.0.0.1:8900/sandbox/jsbridge.js",
    ),
    "mp_appid": Setting("WX_MP_APPID", None, "mini-program AppID", dev_default="wxmpdev000000001"),
    "mp_secret": Setting(
        "WX_MP_SECRET",
        None,
        "mini-program AppSecret",
        dev_default="mp-dev-secret",
        secret=True,
    ),
    "oa_appid": Setting("WX_OA_APPID", None, "official-account AppID", dev_default="wxoadev000000001"),
    "oa_secret": Setting(
        "WX_OA_SECRET",
        None,
        "official-account AppSecret",
        dev_default="oa-dev-secret",
        secret=True,
    ),
    "oa_token": Setting(
        "WX_OA_TOKEN",
        None,
        "official-account server Token (callback signature)",
        dev_default="oadevtoken",
        secret=True,
    ),
    "mp_token": Setting(
        "WX_MP_TOKEN",
        "",
        "mini-program message-push Token (JSON, plain mode): receives subscribe-message delivery results; "
        "empty = not configured",
        dev_default="mpdevtoken",
        secret=True,
    ),
    "oa_aes_key": Setting(
        "WX_OA_AES_KEY",
        "",
        "official-account EncodingAESKey (43 characters); empty for plain mode",
        secret=True,
    ),
    "mch_id": Setting("WX_PAY_MCH_ID", None, "WeChat Pay merchant number", dev_default="1900000109"),
    "pay_key": Setting(
        "WX_PAY_API_KEY",
        None,
        "WeChat Pay API v2 key (32 characters)",
        dev_default="devpaykey0123456789abcdefghijklm",
        secret=True,
    ),
    "pay_cert": Setting(
        "WX_PAY_CERT",
        "",
        "path of the merchant client certificate (apiclient_cert.pem) for /secapi/ calls",
    ),
    "pay_key_pem": Setting(
        "WX_PAY_KEY_PEM",
        "",
        "path of the merchant client certificate's private key (apiclient_key.pem)",
        secret=True,
    ),
    "pay_api": Setting(
        "WX_PAY_API",
        "v2",
        "WeChat Pay API the merchant uses: v2 (XML, API key) or v3 (JSON, RSA, APIv3 key)",
        parse=lambda v: _choice(v, ("v2", "v3")),
    ),
    "pay_sign_type": Setting(
        "WX_PAY_SIGN_TYPE",
        "MD5",
        "WeChat Pay v2 signature algorithm, as set for the merchant: MD5 or HMAC-SHA256 (requests, paySign)",
        parse=lambda v: _choice(v, ("md5", "hmac-sha256")).upper(),
    ),
    "pay_apiv3_key": Setting(
        "WX_PAY_APIV3_KEY",
        "",
        "WeChat Pay APIv3 key (32 characters; decrypts v3 notifications); v3 only",
        dev_default="devapiv3key0123456789abcdefghijk",
        secret=True,
    ),
    "pay_mch_serial": Setting(
        "WX_PAY_MCH_SERIAL",
        "",
        "serial number of the merchant API certificate whose key signs v3 requests",
        dev_default="5157F09EFDC096DE15EBE81A47057A7232F1B8E1",
    ),
    "pay_v3_private_key": Setting(
        "WX_PAY_V3_PRIVATE_KEY",
        "",
        "path of the merchant API private key (apiclient_key.pem) signing v3 requests",
        dev_default="var/pay-v3/apiclient_key.pem",
    ),
    "pay_public_key": Setting(
        "WX_PAY_PUBLIC_KEY",
        "",
        "path of the WeChat Pay public key (pub_key.pem) that v3 answers and notifications are checked with",
        dev_default="var/pay-v3/wechatpay_public_key.pem",
    ),
    "pay_public_key_id": Setting(
        "WX_PAY_PUBLIC_KEY_ID",
        "",
        "id of that WeChat Pay public key (PUB_KEY_ID_...): the Wechatpay-Serial of what it signs",
        dev_default="PUB_KEY_ID_0119000001092026000000000000000001",
    ),
    "public_base": Setting(
        "WX_PUBLIC_BASE",
        None,
        "public base URL of this backend (payment notify URL, links)",
        dev_default="http://127.0.0.1:8000",
    ),
    "webhook_url": Setting(
        "WX_WEBHOOK_URL",
        "",
        "marketing-system webhook for new applications, signed contracts, payments",
    ),
    "trusted_proxies": Setting(
        "WX_TRUSTED_PROXIES",
        ("127.0.0.1", "::1"),
        "comma-separated proxy addresses whose X-Forwarded-* and X-Request-Id headers are trusted",
        parse=_csv,
    ),
    "embedded_workers": Setting(
        "WX_EMBEDDED_WORKERS",
        False,
        "run the background workers inside the web process (development and tests)",
        dev_default=True,
        parse=_bool,
    ),
    "messages_file": Setting(
        "WX_MESSAGES_FILE",
        "",
        "message templates (TOML: template ids and keywords); empty = templates/messages/catalogue.toml",
    ),
    "outbox_concurrency": Setting(
        "WX_OUTBOX_CONCURRENCY",
        8,
        "messages one worker process sends at the same time",
        parse=int,
    ),
    "outbox_lease": Setting(
        "WX_OUTBOX_LEASE",
        60.0,
        "seconds a worker owns a claimed message before others may reclaim it",
        parse=float,
    ),
    "outbox_retry_base": Setting(
        "WX_OUTBOX_RETRY_BASE",
        10.0,
        "first retry delay in seconds (doubles per try, at most 15 min)",
        parse=float,
    ),
    "outbox_max_tries": Setting(
        "WX_OUTBOX_MAX_TRIES",
        8,
        "sending tries before a message is recorded failed",
        parse=int,
    ),
    "outbox_poll": Setting("WX_OUTBOX_POLL", 1.0, "seconds an idle worker waits before looking again", parse=float),
    "outbox_account_pause": Setting(
        "WX_OUTBOX_ACCOUNT_PAUSE",
        60.0,
        "seconds a channel pauses after an account-level WeChat fault (doubles per failed probe, at most 30 min)",
        parse=float,
    ),
    "sandbox_template_quota": Setting(
        "WX_SANDBOX_TEMPLATE_QUOTA",
        100000,
        "sandbox only: template messages per day before 45009",
        parse=int,
    ),
    "sandbox_callback_base": Setting(
        "WX_SANDBOX_CALLBACK_BASE",
        None,
        "sandbox only: base URL of the backend that receives pushed events and payment notifications",
        dev_default="http://127.0.0.1:8000",
    ),
    "sandbox_pay_private_key": Setting(
        "WX_SANDBOX_PAY_PRIVATE_KEY",
        "",
        "sandbox only: path of the private key the sandbox signs as WeChat Pay v3 with (its public half is "
        "WX_PAY_PUBLIC_KEY); dev and test create both when missing",
        dev_default="var/pay-v3/sandbox_wechatpay_key.pem",
    ),
    "sandbox_notify_scale": Setting(
        "WX_SANDBOX_NOTIFY_SCALE",
        1.0,
        "sandbox only: factor on WeChat Pay's notification retry schedule (0.01 turns minutes into seconds)",
        parse=float,
    ),
    "sandbox_password_delay": Setting(
        "WX_SANDBOX_PASSWORD_DELAY",
        3.0,
        "sandbox only: seconds a payment-code customer takes to enter the password (password_then_pay)",
        parse=float,
    ),
    "sandbox_time_scale": Setting(
        "WX_SANDBOX_TIME_SCALE",
        1.0,
        "sandbox only: factor on WeChat Pay's fixed payment-code times (an unpaid order revoked after 45 s, no "
        "reverse within 15 s); tests shrink them in proportion, with the same WX_PAY_TIME_SCALE",
        parse=float,
    ),
    "sandbox_refund_delay": Setting(
        "WX_SANDBOX_REFUND_DELAY",
        5.0,
        "sandbox only: seconds from a refund's acceptance to its outcome (SUCCESS, or REFUNDCLOSE / CHANGE on request)",
        parse=float,
    ),
    "sandbox_latency_ms": Setting(
        "WX_SANDBOX_LATENCY_MS",
        0.0,
        "sandbox only: milliseconds every WeChat and SMS endpoint waits before answering (see /sandbox/latency)",
        parse=float,
    ),
    "sandbox_token_grace": Setting(
        "WX_SANDBOX_TOKEN_GRACE",
        300.0,
        "sandbox only: seconds a replaced access token keeps working (WeChat: about 5 minutes)",
        parse=float,
    ),
    "sandbox_client_msg_id_ttl": Setting(
        "WX_SANDBOX_CLIENT_MSG_ID_TTL",
        600.0,
        "sandbox only: seconds a template message's client_msg_id is remembered (WeChat: 10 minutes)",
        parse=float,
    ),
    "sandbox_push_timeout": Setting(
        "WX_SANDBOX_PUSH_TIMEOUT",
        5.0,
        "sandbox only: seconds the sandbox waits for the official-account callback's answer before pushing "
        "again (WeChat: 5 s, three tries)",
        parse=float,
    ),
    "sms_provider": Setting(
        "WX_SMS_PROVIDER",
        "disabled",
        "SMS provider for verification codes: disabled (refuses to send), or sandbox (dev/test only)",
        dev_default="sandbox",
    ),
    "pay_max_fen": Setting(
        "WX_PAY_MAX_FEN",
        5_000_000,
        "largest single electricity payment in fen (JSAPI and payment code)",
        parse=int,
    ),
    "pay_order_ttl": Setting(
        "WX_PAY_ORDER_TTL",
        900,
        "seconds a mini-program payment stays payable (time_expire; at least 300)",
        parse=int,
    ),
    "pay_poll_interval": Setting(
        "WX_PAY_POLL_INTERVAL",
        3.0,
        "seconds between order queries while a payment-code customer enters the password",
        parse=float,
    ),
    "pay_poll_window": Setting(
        "WX_PAY_POLL_WINDOW",
        30.0,
        "seconds a payment-code order is polled before it is reversed (15 to 45: WeChat's reverse and revoke times)",
        parse=float,
    ),
    "pay_query_delay": Setting(
        "WX_PAY_QUERY_DELAY",
        5.0,
        "seconds to wait after a payment-code SYSTEMERROR or timeout before querying",
        parse=float,
    ),
    "pay_bill_retry": Setting(
        "WX_PAY_BILL_RETRY",
        120.0,
        "seconds between downloadbill tries while WeChat answers Bill Creating (5 tries; scripts.reconcile)",
        parse=float,
    ),
    "pay_time_scale": Setting(
        "WX_PAY_TIME_SCALE",
        1.0,
        "tests only: factor on WeChat Pay's fixed payment-code times as the backend counts them (45 s, 15 s); "
        "refused with WX_ENV=prod unless 1",
        parse=float,
    ),
    "pay_followup_interval": Setting(
        "WX_PAY_FOLLOWUP_INTERVAL",
        30.0,
        "seconds between runs of the payment follow-up (unfinished orders)",
        parse=float,
    ),
    "cleanup_interval": Setting(
        "WX_CLEANUP_INTERVAL",
        3600.0,
        "seconds between clean-up passes (expired sessions, nonces, SMS codes; python -m wx_backend.cleanup)",
        parse=float,
    ),
    "credit_step_delay": Setting(
        "WX_CREDIT_STEP_DELAY",
        0.0,
        "tests only: seconds to pause between the steps of crediting a payment (proves no step relies on timing);"
        " refused with WX_ENV=prod",
        parse=float,
    ),
    "supply_interval": Setting(
        "WX_SUPPLY_INTERVAL",
        60.0,
        "seconds between the worker's passes over reconnection requests and overdue reminders",
        parse=float,
    ),
    "overdue_remind_days": Setting(
        "WX_OVERDUE_REMIND_DAYS",
        3,
        "days before an unpaid postpaid bill's due date that 欠费提醒 is sent",
        parse=int,
    ),
    "smtp_url": Setting(
        "WX_SMTP_URL",
        "",
        "mail server for e-invoices: smtp://[user:password@]host[:port] (STARTTLS when offered), "
        "smtp+starttls://... (STARTTLS required) or smtps://... (TLS); empty = no e-mail",
        secret=True,
    ),
    "smtp_from": Setting("WX_SMTP_FROM", "", "sender address of invoice e-mails (empty: the URL's user)"),
    "smtp_ca_file": Setting(
        "WX_SMTP_CA_FILE",
        "",
        "CA certificates (PEM) that verify the mail server; empty = the system's",
    ),
    "log_level": Setting("WX_LOG_LEVEL", "INFO", "logging level"),
    "catalog_dir": Setting(
        "WX_CATALOG_DIR",
        "",
        "extra catalog folder: its TOML files add business types or replace built-in ones by code",
    ),
    "seal_dir": Setting(
        "WX_SEAL_DIR",
        "",
        "folder written by scripts/seal_authority.py (root.pem, root.key.pem, utility.pem, utility.key.pem, "
        "utility.png); required outside dev/test, where an authority is otherwise created once and kept in the "
        "database",
    ),
    "seal_passphrase": Setting(
        "WX_SEAL_PASSPHRASE",
        "",
        "passphrase of the encrypted keys in WX_SEAL_DIR",
        secret=True,
    ),
    "tsa_url": Setting(
        "WX_TSA_URL",
        "",
        "RFC 3161 time-stamping authority that timestamps every contract signature and the archive timestamp "
        "(production: the CA's TSA); empty: signatures carry only the signer's claimed time",
        dev_default="http://127.0.0.1:8900/tsa",
    ),
    "tsa_roots": Setting(
        "WX_TSA_ROOTS",
        "",
        "PEM file of the root certificates the TSA's certificate chains to; empty in dev/test: the sandbox TSA root",
    ),
    "seal_crl_url": Setting(
        "WX_SEAL_CRL_URL",
        "",
        "URL of the seal authority's CRL, written into the certificates it issues "
        "(default: WX_PUBLIC_BASE/pki/seal-ca.crl)",
    ),
    "seal_ocsp_url": Setting(
        "WX_SEAL_OCSP_URL",
        "",
        "URL of the seal authority's OCSP responder written into its certificates (default: WX_PUBLIC_BASE/pki/ocsp)",
    ),
    "document_workers": Setting(
        "WX_DOCUMENT_WORKERS",
        2,
        "worker processes that render, draw on, seal and verify contract PDFs (0: a thread of the process)",
        parse=int,
    ),
    "upload_max_bytes": Setting(
        "WX_UPLOAD_MAX_BYTES",
        10 * 1024 * 1024,
        "largest accepted upload in bytes (JPEG, PNG or PDF)",
        parse=int,
    ),
}


class Config:
    """The settings named in ``SETTINGS``, read once, as attributes (``config.port``)."""

    def __init__(self, values: dict[str, Any]):
        self._values = dict(values)

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["_values"][name]
        except KeyError:
            raise AttributeError(name) from None

    @property
    def is_dev(self) -> bool:
        return self.env == "dev"

    @property
    def data_key_bytes(self) -> bytes:
        return base64.b64decode(self.data_key)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: Any) -> Config:
        environ = dict(os.environ if environ is None else environ)
        env = environ.get("WX_ENV", "prod")
        values: dict[str, Any] = {}
        missing: list[str] = []
        for name, setting in SETTINGS.items():
            if name in overrides:
                values[name] = overrides[name]
                continue
            raw = environ.get(setting.env)
            if raw is None or raw == "":
                value = setting.dev_default if env == "dev" and setting.dev_default is not None else setting.default
                if value is None:
                    missing.append(setting.env)
                values[name] = value
                continue
            try:
                values[name] = setting.parse(raw)
            except ValueError as exc:
                raise ConfigError(f"{setting.env}: cannot read {raw!r}: {exc}") from exc
        if missing:
            raise ConfigError(
                "missing settings: "
                + ", ".join(missing)
                + " (set them in the environment; development defaults exist only with WX_ENV=dev)"
            )
        if env == "prod" and values["h5_bridge_standin"]:
            raise ConfigError("WX_H5_BRIDGE_STANDIN is for development only; unset it in production")
        if env == "prod" and values["credit_step_delay"]:
            raise ConfigError("WX_CREDIT_STEP_DELAY is for tests only; unset it in production")
        try:
            if len(base64.b64decode(values["data_key"], validate=True)) != 32:
                raise ValueError("not 32 bytes")
        except ValueError as exc:
            raise ConfigError(f"WX_DATA_KEY must be base64 of 32 random bytes ({exc})") from exc
        return cls(values)

    def public(self) -> dict[str, Any]:
        """The settings with secrets blanked, for start-up logs."""
        return {
            s.env: ("***" if s.secret and self._values[name] else self._values[name]) for name, s in SETTINGS.items()
        }
