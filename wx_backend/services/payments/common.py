"""What every part of a payment shares: collections and indexes, states, amounts, the audit trail."""

from __future__ import annotations

import asyncio
import logging
import secrets
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from pymongo import DESCENDING, IndexModel
from pymongo.asynchronous.database import AsyncDatabase

from ...config import Config
from ...db import utcnow
from ...validators import is_amount_fen
from ...wechat.pay import (
    PayAPI,  # or PayV3API: the same operations and results (WX_PAY_API)
    PayCall,
    PayNotificationError,
    PaySignatureError,
)
from ..accounts import AccountService
from ..ratelimit import RateLimiter

log = logging.getLogger(__package__)

SHANGHAI = ZoneInfo("Asia/Shanghai")

INDEXES = {
    "payments": [
        IndexModel([("out_trade_no", 1)], unique=True),
        IndexModel([("user_id", 1), ("created_at", DESCENDING)]),
        IndexModel([("account_no", 1), ("created_at", DESCENDING)]),
        IndexModel([("status", 1), ("next_check_at", 1)]),
        IndexModel([("paid_at", 1)]),
    ],
    "payment_events": [IndexModel([("out_trade_no", 1), ("at", 1)])],
    "payment_credits": [IndexModel([("state", 1), ("created_at", 1)])],
    "payment_refunds": [
        IndexModel([("out_trade_no", 1)]),
        IndexModel([("created_at", 1)]),
        IndexModel([("state", 1), ("next_check_at", 1)]),
    ],
    "terminal_trades": [IndexModel([("created_at", 1)])],
}

OPEN = ("created", "pending")
FINAL = ("credited", "closed", "failed", "reversed")
UNIFIEDORDER_TRIES = 3
REVERSE_TRIES = 10
NOTIFY_ANSWER_WITHIN = 3.0  # seconds; WeChat gives up on an answer after 5
BILL_WRITE_TRIES = 50  # re-reads of a bill a concurrent writer changed; then the follow-up resumes
QUERY_INTERVAL = 2  # seconds between two orderquery calls for one order on behalf of a customer
BODY = "郏县供电-电费"

# what the cashier's screen says when a payment code fails
FAIL_REASONS = {
    "NOTENOUGH": "余额不足，请更换付款方式",
    "AUTHCODEEXPIRE": "付款码已过期，请刷新后重试",
    "AUTH_CODE_INVALID": "付款码已过期，请刷新后重试",
    "AUTH_CODE_ERROR": "付款码无效或已使用，请刷新后重试",
    "NOTSUPORTCARD": "不支持该银行卡，请更换付款方式",
    "BUYER_MISMATCH": "付款人与订单不符，请重新下单",
    "TRADE_ERROR": "交易被拒绝，请更换付款方式",
    "PAYERROR": "支付失败，请更换付款方式",
    "ORDERNOTEXIST": "交易未成功，未扣款，请重新扫码",
}
REVERSED_REASON = "顾客未在规定时间内完成支付，交易已撤销，款项不会扣除"


def new_trade_no() -> str:
    """``P`` + Beijing yyyymmddHHMMSS + 12 random digits: 27 characters, unique in practice."""
    stamp = datetime.now(SHANGHAI).strftime("%Y%m%d%H%M%S")
    return "P" + stamp + "".join(secrets.choice("0123456789") for _ in range(12))


def wechat_time_to_utc(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.strptime(value, "%Y%m%d%H%M%S").replace(tzinfo=SHANGHAI).astimezone(UTC)
    except ValueError:
        return None


def yuan_to_fen(text: str) -> int:
    """``"123.45"`` -> 12345 by string arithmetic (the bill's amounts)."""
    text = text.strip().lstrip("`")
    sign = -1 if text.startswith("-") else 1
    whole, _, frac = text.lstrip("-").partition(".")
    return sign * (int(whole or "0") * 100 + int((frac + "00")[:2]))


def fen_text(fen: int) -> str:
    return f"{fen // 100}.{fen % 100:02d}"


def read_notification(parse: Any, raw: bytes, headers: Any, what: str) -> tuple[dict[str, str] | None, str]:
    """A WeChat Pay notification's fields by the gateway's ``parse`` (signature and envelope
    checked), or ``None`` and the answer's message when it is forged or malformed (logged as
    ``what``: payment or refund)."""
    try:
        return parse(raw, headers), ""
    except PaySignatureError:
        log.warning("%s notification with a bad signature refused", what)
        return None, "签名错误"
    except PayNotificationError as exc:
        log.warning("%s notification refused: %s", what, exc.reason)
        return None, "通知无效"


def check_amount(value: Any, maximum: int, field: str = "amount_fen") -> list[dict[str, str]]:
    if isinstance(value, bool) or not isinstance(value, int):
        return [{"field": field, "message": "金额应为整数（分）"}]
    if not is_amount_fen(value, maximum):
        return [{"field": field, "message": f"金额应在 0.01 元至 {fen_text(maximum)} 元之间"}]
    return []


class PaymentBase:
    """The service's state and the writes every part makes: calls and notifications recorded,
    conditional status changes, the test-only pause between crediting steps."""

    def __init__(
        self, db: AsyncDatabase, pay: PayAPI, accounts: AccountService, config: Config, outbox: Any, notifications: Any
    ):
        self.db = db
        self.pay = pay
        self.accounts = accounts
        self.config = config
        self._background: set[asyncio.Future] = set()  # crediting that outlived its notification
        self.limiter = RateLimiter(db)
        self.outbox = outbox  # app.outbox: enqueue(kind, dedupe_key, payload) -> bool
        self.notifications = notifications  # app.notifications: notify_user(...)

    # -- the audit trail ------------------------------------------------------------------------
    async def record_call(self, call: PayCall) -> None:
        """``PayAPI.on_call`` hook: every call to WeChat Pay, kept with its order. A payment code
        is kept as its last 4 digits only (as in ``terminal_trades``): it is a bearer credential
        for the customer's money until it expires."""
        record = call.to_dict()
        code = record["request"].pop("auth_code", None)
        if isinstance(code, str) and code:
            record["request"]["auth_code_tail"] = code[-4:]
            for name in ("response_raw", "error"):
                if isinstance(record.get(name), str):
                    record[name] = record[name].replace(code, "…" + code[-4:])
        await self.db.payment_events.insert_one(
            {
                "out_trade_no": call.request.get("out_trade_no"),
                "kind": "call",
                "operation": call.operation,
                "outcome": call.outcome,
                "at": utcnow(),
                "call": record,
            }
        )

    async def _record_notification(self, out_trade_no: str | None, fields: dict[str, str], outcome: str) -> None:
        await self.db.payment_events.insert_one(
            {
                "out_trade_no": out_trade_no,
                "kind": "notification",
                "outcome": outcome,
                "at": utcnow(),
                "fields": {k: v for k, v in fields.items() if k != "sign"},
            }
        )

    async def _set_status(
        self, order: dict[str, Any], status: str, from_statuses: tuple[str, ...], **fields: Any
    ) -> bool:
        now = utcnow()
        values = {"status": status, "updated_at": now, **{k: v for k, v in fields.items() if v is not None}}
        if status in FINAL:
            values["next_check_at"] = None
        result = await self.db.payments.update_one(
            {"out_trade_no": order["out_trade_no"], "status": {"$in": list(from_statuses)}}, {"$set": values}
        )
        if result.modified_count:
            log.info("payment %s -> %s", order["out_trade_no"], status)
        return bool(result.modified_count)

    async def _step_pause(self) -> None:
        """``WX_CREDIT_STEP_DELAY``: a test-only pause between crediting steps (0 in service)."""
        if self.config.credit_step_delay:
            await asyncio.sleep(self.config.credit_step_delay)
