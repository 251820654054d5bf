"""WeChat Pay API v2: orders, payment codes, reversal, refunds, bills and payment notifications.

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
import gzip
import hashlib
import hmac
import logging
import re
import secrets
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from defusedxml import ElementTree as SafeET
from defusedxml.common import DefusedXmlException
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

from ..config import Config
from .base import SandboxHandler
from .state import SandboxState

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
BEHAVIOURS = ("pay", "password_then_pay", "password_timeout", "insufficient", "expired")
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
    status: str = "SUCCESS"  # refunds complete at once in the sandbox


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
        return sum(r.refund_fee for r in self.refunds)

    @property
    def was_paid(self) -> bool:
        return self.paid_at is not None

    def view(self) -> dict[str, Any]:
        """The order as the control surface shows it (JSON)."""
        return {
            "out_trade_no": self.out_trade_no, "trade_type": self.trade_type, "appid": self.appid,
            "state": self.state, "trade_state": self.trade_state, "total_fee": self.total_fee,
            "body": self.body, "attach": self.attach, "openid": self.openid,
            "prepay_id": self.prepay_id or None, "transaction_id": self.transaction_id or None,
            "time_end": wechat_time(self.paid_at) if self.paid_at else None,
            "revoked_by": self.revoked_by or None,
            "refunds": [{"out_refund_no": r.out_refund_no, "refund_id": r.refund_id,
                         "refund_fee": r.refund_fee, "status": r.status} for r in self.refunds],
            "refunded_fee": self.refunded,
            "notify_url": self.notify_url or None, "notify_status": self.notify_status or None, "api": self.api,
            "notifications": list(self.notifications),
        }


@dataclass
class PayState:
    """What WeChat Pay knows: orders by out_trade_no, issued payment codes, notification tasks."""

    config: Config
    notify_scale: float = 1.0
    password_delay: float = 3.0
    userpaying_timeout: float = 45.0
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
                config=cfg, notify_scale=cfg.sandbox_notify_scale,
                password_delay=cfg.sandbox_password_delay,
                userpaying_timeout=cfg.sandbox_userpaying_timeout,
            )
        return pay

    @property
    def appids(self) -> set[str]:
        return {self.config.mp_appid, self.config.oa_appid}

    @property
    def key(self) -> str:
        return self.config.pay_key

    def settle(self, order: Order, now: float | None = None) -> Order:
        """Move a payment-code order waiting for a password on to where time has taken it."""
        if order.state != "USERPAYING":
            return order
        now = time.time() if now is None else now
        deadline = order.created_at + self.userpaying_timeout
        if order.pay_at is not None and order.pay_at <= now and order.pay_at < deadline:
            self.mark_paid(order, order.pay_at)
        elif now >= deadline:
            order.state, order.revoked_at, order.revoked_by = "REVOKED", deadline, "timeout"
        return order

    def find(self, out_trade_no: str = "", transaction_id: str = "") -> Order | None:
        if transaction_id:
            out_trade_no = self.by_transaction.get(transaction_id, "")
        order = self.orders.get(out_trade_no) if out_trade_no else None
        return self.settle(order) if order else None

    def mark_paid(self, order: Order, at: float) -> None:
        order.state, order.paid_at = "SUCCESS", at
        order.transaction_id = "4200" + datetime.fromtimestamp(at, SHANGHAI).strftime("%Y%m%d") + \
            "".join(secrets.choice("0123456789") for _ in range(16))
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
            "appid": order.appid, "mch_id": self.config.mch_id, "nonce_str": secrets.token_hex(16),
            "result_code": "SUCCESS", "return_code": "SUCCESS", "openid": order.openid,
            "is_subscribe": "N", "trade_type": order.trade_type, "bank_type": "OTHERS",
            "total_fee": str(order.total_fee), "fee_type": "CNY", "cash_fee": str(order.total_fee),
            "transaction_id": order.transaction_id, "out_trade_no": order.out_trade_no,
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
        try:
            resp = await AsyncHTTPClient().fetch(HTTPRequest(
                order.notify_url, method="POST", body=body, headers=headers,
                connect_timeout=NOTIFY_REPLY_TIMEOUT, request_timeout=NOTIFY_REPLY_TIMEOUT,
            ), raise_error=False)
        except (OSError, HTTPClientError) as exc:
            record.update(outcome="error", reason=type(exc).__name__)
            return False
        record["status"] = resp.code
        reply = (resp.body or b"")[:512].decode("utf-8", "replace")
        record["reply"] = reply
        ok = self.notification_accepted(order, resp.code, resp.body or b"")
        record["outcome"] = "SUCCESS" if ok else "FAIL"
        return ok


# notification formats of the other APIs, by ``Order.api`` (pay_v3 adds "v3")
NOTIFIERS: dict[str, Any] = {}


def _garble(sign: str) -> str:
    return ("0" if sign[0] != "0" else "1") + sign[1:]


# -- the endpoints -----------------------------------------------------------------------------
class PayFail(Exception):
    """A business failure: ``result_code=FAIL`` with ``err_code``/``err_code_des``."""

    def __init__(self, err_code: str, des: str, **extra: str):
        super().__init__(f"{err_code}: {des}")
        self.err_code, self.des, self.extra = err_code, des, extra


class ReturnFail(Exception):
    """The call itself is refused: ``return_code=FAIL`` with ``return_msg`` only, unsigned."""

    def __init__(self, msg: str):
        super().__init__(msg)
        self.msg = msg


class PayHandler(SandboxHandler):
    """One Pay v2 endpoint: parse and check the signed XML, run ``handle``, answer signed XML."""

    required: tuple[str, ...] = ()

    @property
    def pay(self) -> PayState:
        return PayState.of(self.state)

    async def post(self) -> None:
        parsed = self._parse()
        fault = await self.begin(parsed.get("out_trade_no") if parsed else None)  # faults may aim at it
        try:
            req = self.check_request(parsed)
        except ReturnFail as exc:
            self.write_xml({"return_code": "FAIL", "return_msg": exc.msg})
            return
        sign_type = req.get("sign_type") or "MD5"
        try:
            missing = [name for name in self.required if not req.get(name)]
            if missing:
                raise PayFail("LACK_PARAMS", f"缺少参数{','.join(missing)}")
            result = self.handle(req, fault)
        except PayFail as exc:
            result = {"result_code": "FAIL", "err_code": exc.err_code, "err_code_des": exc.des, **exc.extra}
        if result is None:  # the handler has written a raw body (downloadbill)
            return
        self.reply(req, sign_type, result, bad_sign=(fault == "bad_signature"))

    def _parse(self) -> dict[str, str] | None:
        """The body as a flat XML document; ``None`` when empty or not XML (check_request says which)."""
        try:
            return parse_xml(self.request.body) if self.request.body else None
        except ValueError:
            return None

    def check_request(self, req: dict[str, str] | None) -> dict[str, str]:
        if not self.request.body:
            raise ReturnFail("POST_DATA_EMPTY")
        if req is None:
            raise ReturnFail("XML_FORMAT_ERROR")
        missing = [name for name in ("appid", "mch_id", "nonce_str", "sign") if not req.get(name)]
        if missing:
            raise ReturnFail(f"LACK_PARAMS: {','.join(missing)}")
        if req.get("sign_type", "MD5") not in ("MD5", "HMAC-SHA256"):
            raise ReturnFail("sign_type参数错误")
        if not verify_pay_signature(req, self.pay.key):
            raise ReturnFail("签名错误")
        if req["appid"] not in self.pay.appids:
            raise ReturnFail("appid不存在")
        if req["mch_id"] != self.pay.config.mch_id:
            raise ReturnFail("商户号mch_id与appid不匹配")
        return req

    def reply(self, req: dict[str, str], sign_type: str, result: dict[str, Any], bad_sign: bool) -> None:
        fields: dict[str, Any] = {"return_code": "SUCCESS", "return_msg": "OK", "appid": req["appid"],
                                  "mch_id": req["mch_id"], "nonce_str": secrets.token_hex(16)}
        if req.get("device_info"):
            fields["device_info"] = req["device_info"]
        fields.setdefault("result_code", "SUCCESS")
        fields.update(result)
        fields = {k: str(v) for k, v in fields.items() if v is not None and v != ""}
        if sign_type != "MD5":
            fields["sign_type"] = sign_type
        fields["sign"] = pay_signature(fields, self.pay.key, sign_type)
        if bad_sign:
            fields["sign"] = _garble(fields["sign"])
        self.write_xml(fields)

    def write_xml(self, fields: dict[str, Any]) -> None:
        self.set_header("Content-Type", "text/xml; charset=UTF-8")
        self.finish(to_xml(fields))

    def handle(self, req: dict[str, str], fault: str | None) -> dict[str, Any] | None:
        raise NotImplementedError

    # helpers shared by the endpoints
    @staticmethod
    def transient(fault: str | None) -> None:
        if fault == "system_error":
            raise PayFail("SYSTEMERROR", "系统超时，请稍后再试")
        if fault == "bank_error":
            raise PayFail("BANKERROR", "银行系统异常")

    @staticmethod
    def fee(req: dict[str, str], name: str) -> int:
        value = req.get(name, "")
        if not value.isdigit() or not value.isascii() or int(value) <= 0:
            raise PayFail("PARAM_ERROR", f"{name}参数错误，必须为正整数（单位：分）")
        return int(value)

    def order_of(self, req: dict[str, str]) -> Order:
        if not req.get("out_trade_no") and not req.get("transaction_id"):
            raise PayFail("LACK_PARAMS", "缺少参数out_trade_no或transaction_id")
        order = self.pay.find(req.get("out_trade_no", ""), req.get("transaction_id", ""))
        if order is None:
            raise PayFail("ORDERNOTEXIST", "此交易订单号不存在")
        return order

    def paid_fields(self, order: Order) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "openid": order.openid, "is_subscribe": "N", "trade_type": order.trade_type,
            "bank_type": "OTHERS", "fee_type": "CNY", "total_fee": order.total_fee,
            "cash_fee_type": "CNY", "cash_fee": order.total_fee, "transaction_id": order.transaction_id,
            "out_trade_no": order.out_trade_no, "attach": order.attach,
            "time_end": wechat_time(order.paid_at) if order.paid_at else "",
        }
        return fields


class UnifiedOrderHandler(PayHandler):
    endpoint = "unifiedorder"
    required = ("body", "out_trade_no", "total_fee", "spbill_create_ip", "notify_url", "trade_type")
    _not_compared = frozenset({"sign", "nonce_str"})

    def handle(self, req, fault):
        self.transient(fault)
        pay, now = self.pay, time.time()
        if not OUT_TRADE_NO.match(req["out_trade_no"]):
            raise PayFail("PARAM_ERROR", "out_trade_no参数格式错误")
        total_fee = self.fee(req, "total_fee")
        trade_type = req["trade_type"]
        if trade_type not in ("JSAPI", "NATIVE"):
            raise PayFail("PARAM_ERROR", "trade_type参数错误")
        if trade_type == "JSAPI" and not req.get("openid"):
            raise PayFail("LACK_PARAMS", "JSAPI支付必须传openid")
        if "?" in req["notify_url"] or not req["notify_url"].startswith(("http://", "https://")):
            raise PayFail("PARAM_ERROR", "notify_url参数错误，须为不带参数的URL")
        time_expire = None
        if req.get("time_expire"):
            try:
                time_expire = parse_wechat_time(req["time_expire"])
            except ValueError:
                raise PayFail("PARAM_ERROR", "time_expire参数格式错误") from None
            if time_expire < now + 300 - 10:  # WeChat asks for at least 5 minutes
                raise PayFail("PARAM_ERROR", "time_expire时间过短，至少5分钟")
        params = {k: v for k, v in req.items() if k not in self._not_compared}
        order = pay.find(req["out_trade_no"])
        if order is not None:
            if order.trade_type == "MICROPAY":
                raise PayFail("OUT_TRADE_NO_USED", "商户订单号重复")
            if order.state in ("SUCCESS",):
                raise PayFail("ORDERPAID", "该订单已支付")
            if order.state == "CLOSED":
                raise PayFail("ORDERCLOSED", "该订单已关闭")
            if order.params != params:
                raise PayFail("INVALID_REQUEST", "201 商户订单号重复，请求参数与原订单不一致")
            if order.prepay_expires_at <= now:  # the same order gets a fresh prepay_id
                pay.by_prepay.pop(order.prepay_id, None)
                order.prepay_id, order.prepay_expires_at = pay.new_prepay_id(), now + PREPAY_LIFETIME
                pay.by_prepay[order.prepay_id] = order.out_trade_no
        else:
            order = Order(
                out_trade_no=req["out_trade_no"], trade_type=trade_type, appid=req["appid"],
                total_fee=total_fee, body=req["body"], attach=req.get("attach", ""),
                openid=req.get("openid", ""), created_at=now, state="NOTPAY",
                sign_type=req.get("sign_type") or "MD5", notify_url=req["notify_url"], params=params,
                prepay_id=pay.new_prepay_id(), prepay_expires_at=now + PREPAY_LIFETIME,
                time_expire=time_expire,
            )
            pay.orders[order.out_trade_no] = order
            pay.by_prepay[order.prepay_id] = order.out_trade_no
        result = {"trade_type": trade_type, "prepay_id": order.prepay_id}
        if trade_type == "NATIVE":
            result["code_url"] = f"weixin://wxpay/bizpayurl?pr={order.prepay_id[-10:]}"
        return result


class MicropayHandler(PayHandler):
    endpoint = "micropay"
    required = ("body", "out_trade_no", "total_fee", "spbill_create_ip", "auth_code")

    def handle(self, req, fault):
        pay, now = self.pay, time.time()
        if fault == "bank_error":
            raise PayFail("BANKERROR", "银行系统异常")
        if not OUT_TRADE_NO.match(req["out_trade_no"]):
            raise PayFail("PARAM_ERROR", "out_trade_no参数格式错误")
        total_fee = self.fee(req, "total_fee")
        code_value = req["auth_code"]
        order = pay.find(req["out_trade_no"])
        if order is not None:
            result = self._again(order, code_value, total_fee)
        else:
            result = self._pay(req, code_value, total_fee, now)
        # system_error: whatever happened above stands (the order may well be paid); only the
        # answer is lost, as when WeChat times out internally. The merchant must query.
        self.transient(fault)
        return result

    def _again(self, order: Order, code: str, total_fee: int) -> dict[str, Any]:
        """The same out_trade_no again: a retry with the same code sees the order as it is now."""
        if order.trade_type != "MICROPAY" or order.auth_code != code or order.total_fee != total_fee:
            if order.state == "SUCCESS":
                raise PayFail("ORDERPAID", "订单已支付")
            if order.state == "REVOKED":
                raise PayFail("ORDERREVERSED", "订单已撤销")
            if order.state == "CLOSED":
                raise PayFail("ORDERCLOSED", "订单已关闭")
            raise PayFail("OUT_TRADE_NO_USED", "商户订单号重复")
        return self._outcome(order)

    def _outcome(self, order: Order) -> dict[str, Any]:
        if order.state == "SUCCESS":
            return self.paid_fields(order)
        if order.state == "USERPAYING":
            raise PayFail("USERPAYING", "需要用户输入支付密码")
        if order.state == "REVOKED":
            raise PayFail("ORDERREVERSED", "订单已撤销")
        if order.state == "PAYERROR" and order.error:
            raise PayFail(*order.error)
        raise PayFail("TRADE_ERROR", "交易失败")

    def _pay(self, req: dict[str, str], code_value: str, total_fee: int, now: float) -> dict[str, Any]:
        pay = self.pay
        code = pay.auth_codes.get(code_value)
        if not AUTH_CODE.match(code_value) or code is None:
            raise PayFail("AUTH_CODE_INVALID", "请扫描微信支付授权码(18位数字，以10、11、12、13、14、15开头)")
        if code.behaviour == "expired":
            raise PayFail("AUTHCODEEXPIRE", "二维码已过期，请用户在微信上刷新后再试")
        if code.used:
            raise PayFail("AUTH_CODE_ERROR", "付款码已使用，请用户刷新付款码")
        code.used = True
        order = Order(
            out_trade_no=req["out_trade_no"], trade_type="MICROPAY", appid=req["appid"],
            total_fee=total_fee, body=req["body"], attach=req.get("attach", ""), openid=code.openid,
            created_at=now, state="USERPAYING", sign_type=req.get("sign_type") or "MD5",
            auth_code=code_value,
        )
        pay.orders[order.out_trade_no] = order
        if code.behaviour == "pay":
            pay.mark_paid(order, now)
        elif code.behaviour == "password_then_pay":
            order.pay_at = now + pay.password_delay
        elif code.behaviour == "insufficient":
            order.state, order.error = "PAYERROR", ("NOTENOUGH", "余额不足，请用户更换银行卡支付")
        return self._outcome(order)


class OrderQueryHandler(PayHandler):
    endpoint = "orderquery"

    def handle(self, req, fault):
        self.transient(fault)
        order = self.order_of(req)
        state = order.trade_state
        desc = {
            "SUCCESS": "支付成功", "REFUND": "转入退款", "NOTPAY": "未支付", "CLOSED": "已关闭",
            "REVOKED": "已撤销", "USERPAYING": "需要用户输入支付密码", "PAYERROR": "支付失败,请撤销订单",
        }[state]
        result: dict[str, Any] = {"trade_state": state, "trade_state_desc": desc,
                                  "out_trade_no": order.out_trade_no, "total_fee": order.total_fee,
                                  "trade_type": order.trade_type, "openid": order.openid,
                                  "attach": order.attach}
        if order.was_paid:
            result.update(self.paid_fields(order))
        return result


class CloseOrderHandler(PayHandler):
    endpoint = "closeorder"
    required = ("out_trade_no",)

    def handle(self, req, fault):
        self.transient(fault)
        order = self.order_of(req)
        if order.state == "SUCCESS":
            raise PayFail("ORDERPAID", "订单已支付，不能发起关单")
        if order.state == "CLOSED":
            raise PayFail("ORDERCLOSED", "订单已关闭，无法重复关闭")
        if order.state != "NOTPAY":
            raise PayFail("TRADE_STATE_ERROR", f"订单状态{order.state}不能关闭")
        order.state = "CLOSED"
        return {"result_msg": "OK"}


class ReverseHandler(PayHandler):
    endpoint = "reverse"

    def handle(self, req, fault):
        try:
            self.transient(fault)
            order = self.order_of(req)
            return self._reverse(order)
        except PayFail as exc:
            transient = exc.err_code in ("SYSTEMERROR", "BANKERROR", "USERPAYING")
            exc.extra["recall"] = "Y" if transient else "N"
            raise

    def _reverse(self, order: Order) -> dict[str, Any]:
        now = time.time()
        if order.trade_type != "MICROPAY":
            raise PayFail("INVALID_REQUEST", "此订单不是付款码支付订单，不支持撤销，请使用退款或关单")
        if now - order.created_at > REVERSE_WINDOW:
            raise PayFail("REVERSE_EXPIRE", "订单已超过撤销期限(7天)")
        if order.state == "USERPAYING":
            raise PayFail("USERPAYING", "正在支付中不能发起撤销")
        if order.refunds:
            raise PayFail("TRADE_STATE_ERROR", "订单已发生退款，不能撤销")
        if order.state != "REVOKED":
            order.state, order.revoked_at, order.revoked_by = "REVOKED", now, "reverse"
        return {"recall": "N"}


class RefundHandler(PayHandler):
    endpoint = "refund"
    required = ("out_refund_no", "total_fee", "refund_fee")

    def handle(self, req, fault):
        self.transient(fault)
        order = self.order_of(req)
        total_fee, refund_fee = self.fee(req, "total_fee"), self.fee(req, "refund_fee")
        if not order.was_paid or order.state not in ("SUCCESS",):
            if order.state == "REVOKED" and order.was_paid:
                raise PayFail("INVALID_REQUEST", "订单已撤销，款项已退回")
            raise PayFail("ORDERNOTEXIST", "订单不存在或未支付")
        if total_fee != order.total_fee:
            raise PayFail("INVALID_REQUEST", "订单金额与原订单不一致")
        existing = next((r for r in order.refunds if r.out_refund_no == req["out_refund_no"]), None)
        if existing is not None:
            if existing.refund_fee != refund_fee:
                raise PayFail("INVALID_REQUEST", "同一商户退款单号的退款金额与之前请求不一致")
            refund = existing
        else:
            if any(r.out_refund_no == req["out_refund_no"] for o in self.pay.orders.values()
                   for r in o.refunds):
                raise PayFail("INVALID_REQUEST", "商户退款单号已用于其他订单")
            if len(order.refunds) >= MAX_REFUNDS:
                raise PayFail("INVALID_REQUEST", "退款次数超过限制(50次)，请使用新订单")
            if order.refunded + refund_fee > order.total_fee:
                raise PayFail("INVALID_REQUEST", "退款金额超过订单可退金额")
            refund = Refund(out_refund_no=req["out_refund_no"],
                            refund_id="5030" + "".join(secrets.choice("0123456789") for _ in range(24)),
                            refund_fee=refund_fee, reason=req.get("refund_desc", ""), created_at=time.time())
            order.refunds.append(refund)
        return {"transaction_id": order.transaction_id, "out_trade_no": order.out_trade_no,
                "out_refund_no": refund.out_refund_no, "refund_id": refund.refund_id,
                "refund_fee": refund.refund_fee, "total_fee": order.total_fee, "fee_type": "CNY",
                "cash_fee": order.total_fee, "cash_refund_fee": refund.refund_fee,
                "refund_channel": "ORIGINAL"}


class RefundQueryHandler(PayHandler):
    endpoint = "refundquery"

    def handle(self, req, fault):
        self.transient(fault)
        pay = self.pay
        keys = ("out_refund_no", "refund_id", "out_trade_no", "transaction_id")
        if not any(req.get(k) for k in keys):
            raise PayFail("LACK_PARAMS", "缺少参数out_refund_no、refund_id、out_trade_no或transaction_id")
        order, refunds = None, []
        if req.get("out_refund_no") or req.get("refund_id"):
            for o in pay.orders.values():
                for r in o.refunds:
                    if r.out_refund_no == req.get("out_refund_no") or r.refund_id == req.get("refund_id"):
                        order, refunds = o, [r]
        else:
            order = pay.find(req.get("out_trade_no", ""), req.get("transaction_id", ""))
            refunds = list(order.refunds) if order else []
        if order is None or not refunds:
            raise PayFail("REFUNDNOTEXIST", "退款订单查询失败")
        result: dict[str, Any] = {
            "transaction_id": order.transaction_id, "out_trade_no": order.out_trade_no,
            "total_fee": order.total_fee, "cash_fee": order.total_fee, "fee_type": "CNY",
            "refund_fee": sum(r.refund_fee for r in refunds), "refund_count": len(refunds),
        }
        for n, r in enumerate(refunds):
            result.update({
                f"out_refund_no_{n}": r.out_refund_no, f"refund_id_{n}": r.refund_id,
                f"refund_channel_{n}": "ORIGINAL", f"refund_fee_{n}": r.refund_fee,
                f"refund_status_{n}": r.status, f"refund_account_{n}": "REFUND_SOURCE_UNSETTLED_FUNDS",
                f"refund_recv_accout_{n}": "支付用户的零钱",
                f"refund_success_time_{n}": datetime.fromtimestamp(r.created_at, SHANGHAI)
                .strftime("%Y-%m-%d %H:%M:%S"),
            })
        return result


class DownloadBillHandler(PayHandler):
    endpoint = "downloadbill"
    required = ("bill_date",)

    def post_fail(self, msg: str) -> None:
        self.write_xml({"return_code": "FAIL", "return_msg": msg, "error_code": "20001"})

    def handle(self, req, fault):
        if fault == "system_error":
            self.write_xml({"return_code": "FAIL", "return_msg": "SYSTEMERROR"})
            return None
        bill_type = req.get("bill_type") or "ALL"
        if bill_type not in ("ALL", "SUCCESS", "REFUND"):
            self.post_fail("invalid bill_type")
            return None
        try:
            day = datetime.strptime(req["bill_date"], "%Y%m%d").date()
        except ValueError:
            self.post_fail("invalid bill_date")
            return None
        text = bill(self.pay, day, bill_type)
        if text is None:
            self.post_fail("No Bill Exist")
            return None
        data = text.encode("utf-8")
        if req.get("tar_type") == "GZIP":
            self.set_header("Content-Type", "application/x-gzip")
            self.finish(gzip.compress(data))
        else:
            self.set_header("Content-Type", "text/plain; charset=UTF-8")
            self.finish(data)
        return None


def bill(pay: PayState, day, bill_type: str = "ALL") -> str | None:
    """The merchant's bill of one Beijing-time day, in WeChat's format; ``None`` when empty.

    A payment row for every order paid that day (交易状态 SUCCESS, or REVOKED when it was
    reversed later, with the whole amount in 退款金额), and a refund row (交易状态 REFUND) for
    every refund made that day. Amounts are yuan with two decimals, from integer fen.
    """
    start = datetime(day.year, day.month, day.day, tzinfo=SHANGHAI).timestamp()
    end = (datetime(day.year, day.month, day.day, tzinfo=SHANGHAI) + timedelta(days=1)).timestamp()
    rows: list[tuple[float, list[str]]] = []
    totals = {"settled": 0, "refund": 0, "fee": 0, "order": 0, "applied": 0}
    cfg = pay.config

    def row(at: float, order: Order, status: str, settled: int, refund_no: str, refund_id: str,
            refund: int, fee: int) -> list[str]:
        return [
            datetime.fromtimestamp(at, SHANGHAI).strftime("%Y-%m-%d %H:%M:%S"), order.appid, cfg.mch_id,
            "0", "", order.transaction_id, order.out_trade_no, order.openid, order.trade_type, status,
            "OTHERS", "CNY", yuan(settled), "0.00", refund_id, refund_no, yuan(refund), "0.00",
            "ORIGINAL" if refund else "", "SUCCESS" if refund else "", order.body, order.attach,
            yuan(fee), "0.60%", yuan(settled), yuan(refund), "",
        ]

    for order in pay.all_orders():
        if bill_type in ("ALL", "SUCCESS") and order.was_paid and start <= order.paid_at < end:
            fee = (order.total_fee * FEE_RATE_PER_MILLE + 500) // 1000
            revoked = order.state == "REVOKED"
            refund = order.total_fee if revoked else 0
            rows.append((order.paid_at, row(order.paid_at, order, "REVOKED" if revoked else "SUCCESS",
                                            order.total_fee, "", "", refund, fee)))
            totals["settled"] += order.total_fee
            totals["order"] += order.total_fee
            totals["refund"] += refund
            totals["applied"] += refund
            totals["fee"] += fee
        if bill_type in ("ALL", "REFUND"):
            for r in order.refunds:
                if start <= r.created_at < end:
                    rows.append((r.created_at, row(r.created_at, order, "REFUND", 0, r.out_refund_no,
                                                   r.refund_id, r.refund_fee, 0)))
                    totals["refund"] += r.refund_fee
                    totals["applied"] += r.refund_fee
    if not rows:
        return None
    rows.sort(key=lambda item: item[0])
    lines = [BILL_COLUMNS]
    lines += [",".join("`" + value.replace(",", "，") for value in cells) for _, cells in rows]
    lines.append(BILL_TOTAL_COLUMNS)
    lines.append(",".join("`" + v for v in (
        str(len(rows)), yuan(totals["settled"]), yuan(totals["refund"]), "0.00", yuan(totals["fee"]),
        yuan(totals["order"]), yuan(totals["applied"]),
    )))
    return "\r\n".join(lines) + "\r\n"


routes = [
    (r"/pay/unifiedorder", UnifiedOrderHandler),
    (r"/pay/micropay", MicropayHandler),
    (r"/pay/orderquery", OrderQueryHandler),
    (r"/pay/closeorder", CloseOrderHandler),
    (r"/secapi/pay/reverse", ReverseHandler),
    (r"/secapi/pay/refund", RefundHandler),
    (r"/pay/refundquery", RefundQueryHandler),
    (r"/pay/downloadbill", DownloadBillHandler),
]
