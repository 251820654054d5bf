"""What WeChat Pay v2 knows: orders, payment codes, refunds, and the payment notifications it sends.

Every call is a POST of an XML body signed with the merchant's API key (MD5, or HMAC-SHA256
when ``sign_type`` says so). The answer has two levels, as WeChat's: ``return_code=FAIL`` with
only ``return_msg`` when the call itself is refused (malformed XML, bad signature, unknown
merchant), otherwise ``return_code=SUCCESS``, signed, with ``result_code`` and, on a business
failure, ``err_code``/``err_code_des``. See ``docs/payments-protocol.md``.

Orders are settled lazily: a payment-code order waiting for the customer's password is
looked at (``PayState.settle``) whenever anything reads it, and becomes paid or revoked if
its moment has passed. Only notifications run as background tasks.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import re
import secrets
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from defusedxml import ElementTree as SafeET
from defusedxml.common import DefusedXmlException
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

from ...config import Config
from ..state import SandboxState

log = logging.getLogger(__name__)

SHANGHAI = ZoneInfo("Asia/Shanghai")
AUTH_CODE = re.compile(r"^1[0-5]\d{16}$")
OUT_TRADE_NO = re.compile(r"^[0-9A-Za-z_\-|*]{1,32}$")
# WeChat's retry schedule after a failed notification (A.10), in seconds
NOTIFY_SCHEDULE = (15, 15, 30, 180, 600, 1200, 1800, 1800, 1800, 3600, 10800, 10800, 10800, 21600, 21600)
NOTIFY_REPLY_TIMEOUT = 5.0
LATE_NOTIFY_DELAY = 300  # seconds of protocol time (scaled like the schedule) for late_notify
DROPPED_ATTEMPTS = 3  # drop_notify: this many first attempts are never sent
PREPAY_LIFETIME = 7200
REVERSE_WINDOW = 7 * 24 * 3600
MAX_REFUNDS = 50
USERPAYING_LIMIT = 45.0  # WeChat revokes a payment-code order still waiting for the password (× WX_SANDBOX_TIME_SCALE)
REVERSE_AFTER = 15.0  # and refuses a reverse sooner after the order
BEHAVIOURS = ("pay", "password_then_pay", "password_timeout", "insufficient", "card_not_supported", "expired")
BILL_COLUMNS = (
    "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,"
    "货币种类,应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,商品名称,"
    "商户数据包,手续费,费率,订单金额,申请退款金额,费率备注"
)
BILL_TOTAL_COLUMNS = "总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额"
FEE_RATE_PER_MILLE = 6  # 0.60 %, the usual rate


# -- signatures and XML (A.1), written out from WeChat's description ---------------------------
def pay_signature(fields: dict[str, Any], key: str, sign_type: str = "MD5") -> str:
    """WeChat's v2 signature: non-empty fields but ``sign``, sorted, ``k=v&...&key=KEY``."""
    pairs = [f"{k}={fields[k]}" for k in sorted(fields) if k != "sign" and str(fields[k]) != ""]
    text = "&".join([*pairs, f"key={key}"]).encode()
    if sign_type == "HMAC-SHA256":
        return hmac.new(key.encode(), text, hashlib.sha256).hexdigest().upper()
    if sign_type == "MD5":
        return hashlib.md5(text).hexdigest().upper()  # noqa: S324  (WeChat's algorithm)
    raise ValueError(f"unknown sign_type {sign_type!r}")


def verify_pay_signature(fields: dict[str, Any], key: str) -> bool:
    """Whether ``fields['sign']`` is right, with the algorithm named by ``sign_type`` (MD5 if absent)."""
    try:
        expected = pay_signature(fields, key, fields.get("sign_type") or "MD5")
    except ValueError:
        return False
    return hmac.compare_digest(expected, str(fields.get("sign", "")))


def to_xml(fields: dict[str, Any]) -> str:
    parts = ["<xml>"]
    for k, v in fields.items():
        v = str(v)
        if v.isdigit():
            parts.append(f"<{k}>{v}</{k}>")
        else:
            parts.append(f"<{k}><![CDATA[{v.replace(']]>', ']]]]><![CDATA[>')}]]></{k}>")
    parts.append("</xml>")
    return "".join(parts)


def parse_xml(body: bytes) -> dict[str, str]:
    """A flat ``<xml>`` document as a dict; ``ValueError`` for anything else (no DTDs, no entities)."""
    try:
        root = SafeET.fromstring(body, forbid_dtd=True)
    except (SafeET.ParseError, DefusedXmlException, UnicodeError) as exc:
        raise ValueError(str(exc)) from exc
    if root.tag != "xml":
        raise ValueError("root element is not <xml>")
    return {child.tag: (child.text or "").strip() for child in root}


def wechat_time(ts: float) -> str:
    return datetime.fromtimestamp(ts, SHANGHAI).strftime("%Y%m%d%H%M%S")


def parse_wechat_time(value: str) -> float:
    return datetime.strptime(value, "%Y%m%d%H%M%S").replace(tzinfo=SHANGHAI).timestamp()


def yuan(fen: int) -> str:
    """Integer fen as yuan with two decimals, by integer arithmetic."""
    sign = "-" if fen < 0 else ""
    fen = abs(fen)
    return f"{sign}{fen // 100}.{fen % 100:02d}"


# -- state -------------------------------------------------------------------------------------
@dataclass
class AuthCode:
    code: str
    openid: str
    behaviour: str
    issued_at: float
    used: bool = False


@dataclass
class Refund:
    out_refund_no: str
    refund_id: str
    refund_fee: int
    reason: str
    created_at: float
    settle_at: float = 0.0  # when it ends: WX_SANDBOX_REFUND_DELAY after it was accepted
    outcome: str = "SUCCESS"  # how it ends: SUCCESS | REFUNDCLOSE | CHANGE
    status: str = "PROCESSING"  # until settle_at, then the outcome
    finished_at: float | None = None
    notify_url: str = ""
    notifications: list[dict[str, Any]] = field(default_factory=list)
    api: str = "v2"  # the API it was asked with: its notification speaks the same (v3: pay_v3_refunds)


@dataclass
class Order:
    out_trade_no: str
    trade_type: str  # JSAPI | NATIVE | MICROPAY
    appid: str
    total_fee: int
    body: str
    attach: str
    openid: str
    created_at: float
    state: str  # NOTPAY | USERPAYING | SUCCESS | CLOSED | PAYERROR | REVOKED (REFUND is derived)
    sign_type: str = "MD5"
    notify_url: str = ""
    params: dict[str, str] = field(default_factory=dict)  # unifiedorder fields, for idempotency
    prepay_id: str = ""
    prepay_expires_at: float = 0.0
    time_expire: float | None = None
    auth_code: str = ""
    pay_at: float | None = None  # password_then_pay: when the customer finishes
    error: tuple[str, str] | None = None  # the micropay failure (err_code, des) behind PAYERROR
    transaction_id: str = ""
    paid_at: float | None = None
    revoked_at: float | None = None
    revoked_by: str = ""  # "reverse" | "timeout"
    refunds: list[Refund] = field(default_factory=list)
    notifications: list[dict[str, Any]] = field(default_factory=list)
    notify_status: str = ""  # "" (none) | pending | delivered | gave_up
    api: str = "v2"  # the API the order was made with: its notifications speak the same (v3: pay_v3)

    @property
    def trade_state(self) -> str:
        return "REFUND" if self.state == "SUCCESS" and self.refunds else self.state

    @property
    def refunded(self) -> int:
        """What the refunds take or may still take (a closed one gave its amount back)."""
        return sum(r.refund_fee for r in self.refunds if r.status != "REFUNDCLOSE")

    @property
    def was_paid(self) -> bool:
        return self.paid_at is not None

    def view(self) -> dict[str, Any]:
        """The order as the control surface shows it (JSON)."""
        return {
            "out_trade_no": self.out_trade_no,
            "trade_type": self.trade_type,
            "appid": self.appid,
            "state": self.state,
            "trade_state": self.trade_state,
            "total_fee": self.total_fee,
            "body": self.body,
            "attach": self.attach,
            "openid": self.openid,
            "prepay_id": self.prepay_id or None,
            "transaction_id": self.transaction_id or None,
            "time_end": wechat_time(self.paid_at) if self.paid_at else None,
            "revoked_by": self.revoked_by or None,
            "refunds": [
                {
                    "out_refund_no": r.out_refund_no,
                    "refund_id": r.refund_id,
                    "refund_fee": r.refund_fee,
                    "status": r.status,
                    "notifications": list(r.notifications),
                }
                for r in self.refunds
            ],
            "sign_type": self.sign_type,
            "refunded_fee": self.refunded,
            "notify_url": self.notify_url or None,
            "notify_status": self.notify_status or None,
            "api": self.api,
            "notifications": list(self.notifications),
        }


@dataclass
class PayState:
    """What WeChat Pay knows: orders by out_trade_no, issued payment codes, notification tasks."""

    config: Config
    notify_scale: float = 1.0
    password_delay: float = 3.0
    userpaying_timeout: float = USERPAYING_LIMIT
    reverse_after: float = REVERSE_AFTER
    refund_delay: float = 5.0
    clock_offset: float = 0.0  # seconds added to the real time where the bill schedule is concerned
    orders: dict[str, Order] = field(default_factory=dict)
    by_transaction: dict[str, str] = field(default_factory=dict)
    by_prepay: dict[str, str] = field(default_factory=dict)
    auth_codes: dict[str, AuthCode] = field(default_factory=dict)
    tasks: set[asyncio.Task] = field(default_factory=set)
    extra: dict[str, Any] = field(default_factory=dict)  # the other APIs' own state (pay_v3: keys, bills)

    @classmethod
    def of(cls, state: SandboxState) -> PayState:
        pay = state.extra.get("pay")
        if pay is None:
            cfg = state.config
            pay = state.extra["pay"] = cls(
                config=cfg,
                notify_scale=cfg.sandbox_notify_scale,
                password_delay=cfg.sandbox_password_delay,
                userpaying_timeout=USERPAYING_LIMIT * cfg.sandbox_time_scale,
                reverse_after=REVERSE_AFTER * cfg.sandbox_time_scale,
                refund_delay=cfg.sandbox_refund_delay,
            )
        return pay

    @property
    def appids(self) -> set[str]:
        return {self.config.mp_appid, self.config.oa_appid}

    @property
    def key(self) -> str:
        return self.config.pay_key

    def settle(self, order: Order, now: float | None = None) -> Order:
        """Move an order on to where time has taken it: a payment-code order waiting for a
        password, refunds past their moment."""
        now = time.time() if now is None else now
        for refund in order.refunds:
            self.settle_refund(refund, now)
        if order.state != "USERPAYING":
            return order
        deadline = order.created_at + self.userpaying_timeout
        if order.pay_at is not None and order.pay_at <= now and order.pay_at < deadline:
            self.mark_paid(order, order.pay_at)
        elif now >= deadline:
            order.state, order.revoked_at, order.revoked_by = "REVOKED", deadline, "timeout"
        return order

    @staticmethod
    def settle_refund(refund: Refund, now: float | None = None) -> None:
        now = time.time() if now is None else now
        if refund.status == "PROCESSING" and now >= refund.settle_at:
            refund.status, refund.finished_at = refund.outcome, refund.settle_at

    def spawn(self, coro: Any) -> None:
        """Run a background task (notifications), kept until it ends."""
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def find(self, out_trade_no: str = "", transaction_id: str = "") -> Order | None:
        if transaction_id:
            out_trade_no = self.by_transaction.get(transaction_id, "")
        order = self.orders.get(out_trade_no) if out_trade_no else None
        return self.settle(order) if order else None

    def mark_paid(self, order: Order, at: float) -> None:
        order.state, order.paid_at = "SUCCESS", at
        order.transaction_id = (
            "4200"
            + datetime.fromtimestamp(at, SHANGHAI).strftime("%Y%m%d")
            + "".join(secrets.choice("0123456789") for _ in range(16))
        )
        self.by_transaction[order.transaction_id] = order.out_trade_no

    def new_auth_code(self, openid: str, behaviour: str) -> str:
        while True:
            code = "13" + "".join(secrets.choice("0123456789") for _ in range(16))
            if code not in self.auth_codes:
                break
        self.auth_codes[code] = AuthCode(code, openid, behaviour, time.time())
        return code

    def new_prepay_id(self) -> str:
        return "wx" + wechat_time(time.time()) + secrets.token_hex(10)

    def all_orders(self) -> list[Order]:
        return [self.settle(o) for o in self.orders.values()]

    # -- notifications (A.10) ------------------------------------------------------------------
    def notification(self, order: Order, bad_sign: bool = False) -> bytes:
        fields = {
            "appid": order.appid,
            "mch_id": self.config.mch_id,
            "nonce_str": secrets.token_hex(16),
            "result_code": "SUCCESS",
            "return_code": "SUCCESS",
            "openid": order.openid,
            "is_subscribe": "N",
            "trade_type": order.trade_type,
            "bank_type": "OTHERS",
            "total_fee": str(order.total_fee),
            "fee_type": "CNY",
            "cash_fee": str(order.total_fee),
            "transaction_id": order.transaction_id,
            "out_trade_no": order.out_trade_no,
            "time_end": wechat_time(order.paid_at or time.time()),
        }
        if order.attach:
            fields["attach"] = order.attach
        if order.sign_type != "MD5":
            fields["sign_type"] = order.sign_type
        fields["sign"] = pay_signature(fields, self.key, order.sign_type)
        if bad_sign:
            fields["sign"] = _garble(fields["sign"])
        return to_xml(fields).encode()

    def start_notifying(self, order: Order, fault: str | None) -> None:
        order.notify_status = "pending"
        task = asyncio.get_running_loop().create_task(self._notify(order, fault))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _notify(self, order: Order, fault: str | None) -> None:
        delays = [0.0, *NOTIFY_SCHEDULE]
        if fault == "late_notify":
            delays[0] = LATE_NOTIFY_DELAY
        for attempt, delay in enumerate(delays, start=1):
            await asyncio.sleep(delay * self.notify_scale)
            if fault == "drop_notify" and attempt <= DROPPED_ATTEMPTS:
                order.notifications.append({"attempt": attempt, "at": time.time(), "outcome": "dropped"})
                continue
            body = self.notification_request(order, bad_sign=(fault == "bad_signature" and attempt == 1))
            copies = 2 if fault == "duplicate_notify" and attempt == 1 else 1
            results = await asyncio.gather(*(self._deliver(order, attempt, body) for _ in range(copies)))
            if any(results):
                order.notify_status = "delivered"
                return
        order.notify_status = "gave_up"

    def notification_request(self, order: Order, bad_sign: bool = False) -> tuple[bytes, dict[str, str]]:
        """The body and headers of one notification attempt, in the order's API."""
        if order.api != "v2":
            return NOTIFIERS[order.api].request(self, order, bad_sign)
        return self.notification(order, bad_sign), {"Content-Type": "text/xml"}

    @staticmethod
    def notification_accepted(order: Order, code: int, body: bytes) -> bool:
        """Whether the merchant's reply stops the retries: v2 wants ``return_code=SUCCESS``."""
        if order.api != "v2":
            return NOTIFIERS[order.api].accepted(code, body)
        try:
            return code == 200 and parse_xml(body).get("return_code") == "SUCCESS"
        except ValueError:
            return False

    async def _deliver(self, order: Order, attempt: int, request: tuple[bytes, dict[str, str]]) -> bool:
        body, headers = request
        record: dict[str, Any] = {"attempt": attempt, "at": time.time(), "outcome": "pending"}  # until replied
        order.notifications.append(record)
        resp = await post_notification(order.notify_url, body, headers, record)
        if resp is None:
            return False
        reply = (resp.body or b"")[:512].decode("utf-8", "replace")
        record["reply"] = reply
        ok = self.notification_accepted(order, resp.code, resp.body or b"")
        record["outcome"] = "SUCCESS" if ok else "FAIL"
        return ok


async def post_notification(url: str, body: bytes, headers: dict[str, str], record: dict[str, Any]) -> Any:
    """POST one notification as WeChat does (an answer within ``NOTIFY_REPLY_TIMEOUT`` or it
    counts as failed); ``record`` (the attempt, kept for the control surface) gets the HTTP status,
    or the error when no answer came (then ``None``)."""
    try:
        resp = await AsyncHTTPClient().fetch(
            HTTPRequest(
                url,
                method="POST",
                body=body,
                headers=headers,
                connect_timeout=NOTIFY_REPLY_TIMEOUT,
                request_timeout=NOTIFY_REPLY_TIMEOUT,
            ),
            raise_error=False,
        )
    except (OSError, HTTPClientError) as exc:
        record.update(outcome="error", reason=type(exc).__name__)
        return None
    record["status"] = resp.code
    return resp


# notification formats of the other APIs, by ``Order.api`` (pay_v3 adds "v3")
NOTIFIERS: dict[str, Any] = {}


def _garble(sign: str) -> str:
    return ("0" if sign[0] != "0" else "1") + sign[1:]
