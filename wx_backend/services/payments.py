"""Electricity payments (用电交费): mini-program JSAPI and payment code at service-hall terminals.

An order (``payments``) moves ``created -> pending -> paid -> credited``, or ends ``closed``
(JSAPI never paid), ``failed`` (WeChat refused, or the payment code failed) or ``reversed``
(payment code revoked). WeChat's word decides: a notification (JSAPI) or an order query.

Crediting happens exactly once per paid order, as a sequence of single-document writes keyed
by ``out_trade_no``, each of which is a no-op when repeated. No lock is held and no step's
correctness depends on how long the others take (docs/storage.md):

1. *paid*: a ``payment_credits`` document ``{_id: out_trade_no}`` is inserted; the unique
   ``_id`` makes it exist once, whoever learns of the payment (notification, query,
   follow-up, concurrently or not). It is the debt "credit this amount to this account".
2. *applied*: one update of the account document adds ``balance_fen += amount`` (``$inc``)
   and the marker ``credited += [out_trade_no]``, matching only if ``credited`` does not hold
   the order yet: balance and marker travel together, never one without the other. Then the
   account's unpaid bills are settled oldest first: each bill gets ``paid_fen += part`` and a
   settlement entry keyed by ``out_trade_no`` in one update whose filter names the bill's
   amount and paid figure as read and the absence of that entry, so a repeat is a no-op and
   a concurrent writer (another credit, the marketing system) makes it re-read, never lose.
3. *done*: the receipt message and the marketing-system webhook are queued in the outbox
   under dedupe keys derived from the order; the order becomes ``credited``.

A crash anywhere leaves a credit that is not ``done`` or an order that is not final; the
follow-up (``followup_once``) finds both and finishes them, possibly while a request is still
at it: every step above is safe to run twice at once. Refunds are built the same way
(``refund``). Calls to WeChat and notifications are recorded in ``payment_events`` and shown
with the order as ``calls`` and ``notifications``.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from pymongo import DESCENDING, IndexModel, ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError, PyMongoError

from ..config import Config
from ..db import utcnow
from ..errors import AppError, Conflict, NotFound, TooManyRequests, ValidationFailed, WeChatUnavailable
from ..validators import field_error, is_account_no, is_amount_fen, is_payment_code, matches
from ..wechat.pay import (
    PayAPI,  # or PayV3API: the same operations and results (WX_PAY_API)
    PayBillNotFound,
    PayCall,
    PayNotificationError,
    PayResult,
    PayReturnError,
    PaySignatureError,
)
from .accounts import AccountService
from .billing import bill_status, history_window
from .keys import read_bills
from .ratelimit import RateLimiter

log = logging.getLogger(__name__)

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
    "payment_refunds": [IndexModel([("out_trade_no", 1)]), IndexModel([("created_at", 1)])],
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


def check_amount(value: Any, maximum: int, field: str = "amount_fen") -> list[dict[str, str]]:
    if isinstance(value, bool) or not isinstance(value, int):
        return [{"field": field, "message": "金额应为整数（分）"}]
    if not is_amount_fen(value, maximum):
        return [{"field": field, "message": f"金额应在 0.01 元至 {fen_text(maximum)} 元之间"}]
    return []


class PaymentService:
    def __init__(self, db: AsyncDatabase, pay: PayAPI, accounts: AccountService, config: Config,
                 outbox: Any, notifications: Any):
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
        await self.db.payment_events.insert_one({
            "out_trade_no": call.request.get("out_trade_no"), "kind": "call", "operation": call.operation,
            "outcome": call.outcome, "at": utcnow(), "call": record,
        })

    async def _record_notification(self, out_trade_no: str | None, fields: dict[str, str], outcome: str) -> None:
        await self.db.payment_events.insert_one({
            "out_trade_no": out_trade_no, "kind": "notification", "outcome": outcome, "at": utcnow(),
            "fields": {k: v for k, v in fields.items() if k != "sign"},
        })

    # -- JSAPI (mini-program) -------------------------------------------------------------------
    async def create_jsapi(self, user: dict[str, Any], account_no: Any, amount_fen: Any,
                           client_ip: str, *, appid: str | None = None, openid: str | None = None) -> dict[str, Any]:
        """A mini-program payment: ``{"out_trade_no", "pay_params"}`` for ``wx.requestPayment``; with
        ``appid`` and ``openid``, one in another app of the merchant (the official account's pages),
        whose ``pay_params`` carry ``appId`` for ``getBrandWCPayRequest``."""
        errors = check_amount(amount_fen, self.config.pay_max_fen)
        if not is_account_no(account_no):
            errors.insert(0, field_error("account_no", "account_no"))
        if errors:
            raise ValidationFailed(details=errors)
        await self.accounts.get_owned(user, account_no)
        now = utcnow()
        expires_at = now + timedelta(seconds=max(300, self.config.pay_order_ttl))
        order = {
            "out_trade_no": new_trade_no(), "channel": "jsapi", "account_no": account_no, "user_id": user["_id"],
            "openid": openid or user["mp_openid"], "appid": appid, "amount_fen": amount_fen, "status": "created",
            "body": f"{BODY}-{account_no}", "client_ip": client_ip or "127.0.0.1",
            "notify_url": f"{self.config.public_base.rstrip('/')}{self.pay.notify_path}",
            "time_expire": expires_at.astimezone(SHANGHAI).strftime("%Y%m%d%H%M%S"),
            "expires_at": expires_at, "created_at": now, "updated_at": now,
            "next_check_at": self._next_jsapi_check(now, expires_at),
        }
        await self.db.payments.insert_one(order)
        result = await self._unifiedorder(order)
        if result is None:
            raise WeChatUnavailable(details={"out_trade_no": order["out_trade_no"]})
        if not result.ok:
            await self._set_status(order, "failed", OPEN, reason=result.get("err_code_des") or result.get("err_code"))
            raise AppError("微信支付下单失败，请稍后再试", code="payment_order_failed", status=502,
                           details={"err_code": result.get("err_code")})
        prepay_id = result["prepay_id"]
        await self._set_status(order, "pending", ("created",), prepay_id=prepay_id)
        return {"out_trade_no": order["out_trade_no"], "amount_fen": amount_fen,
                "expires_at": expires_at, "pay_params": self.pay.jsapi_params(prepay_id, appid=appid)}

    async def _unifiedorder(self, order: dict[str, Any]) -> PayResult | None:
        """unifiedorder, retried with the same out_trade_no and the very same fields after
        SYSTEMERROR or no answer; ``None`` when WeChat could not be reached."""
        result = None
        for attempt in range(UNIFIEDORDER_TRIES):
            try:
                result = await self.pay.unifiedorder(
                    order["out_trade_no"], order["amount_fen"], order["body"], order["openid"], order["notify_url"],
                    order["client_ip"], order["time_expire"], appid=order.get("appid"),
                )
            except PayReturnError as exc:
                raise AppError("微信支付拒绝了下单请求", code="payment_order_failed", status=502,
                               details={"return_msg": exc.return_msg}) from exc
            except WeChatUnavailable:
                result = None
            if result is not None and result.get("err_code") != "SYSTEMERROR":
                return result
            await asyncio.sleep(0.2 * (attempt + 1))
        return result if result is not None and result.get("err_code") != "SYSTEMERROR" else None

    def _next_jsapi_check(self, now: datetime, expires_at: datetime) -> datetime:
        return min(expires_at, now + timedelta(seconds=4 * self.config.pay_followup_interval))

    async def get_for_user(self, user: dict[str, Any], out_trade_no: str) -> dict[str, Any]:
        """The user's own order (404 otherwise); a pending one is first asked of WeChat."""
        order = await self.db.payments.find_one({"out_trade_no": out_trade_no, "user_id": user["_id"]})
        if order is None:
            raise NotFound("未找到该交费订单", code="payment_not_found")
        expired = order["status"] in OPEN and order.get("expires_at") is not None \
            and order["expires_at"] <= utcnow()
        if order["status"] in OPEN and (expired or await self._may_query(out_trade_no)):
            await self.resolve(order, query_now=True)
            order = await self.db.payments.find_one({"out_trade_no": out_trade_no})
        return self.public(order)

    async def _may_query(self, out_trade_no: str) -> bool:
        """At most one look at WeChat per order every ``QUERY_INTERVAL`` seconds on behalf of a
        customer, however often the page is refreshed (shared by every process)."""
        try:
            await self.limiter.take(f"orderquery:{out_trade_no}", period="any", limit=10**9,
                                    min_interval=QUERY_INTERVAL)
        except TooManyRequests:
            return False
        return True

    async def list_for_user(self, user: dict[str, Any], account_no: str | None = None) -> list[dict[str, Any]]:
        query: dict[str, Any] = {"user_id": user["_id"]}
        if account_no is not None:
            if not is_account_no(account_no):
                raise ValidationFailed(details=[field_error("account_no", "account_no")])
            query["account_no"] = account_no
        docs = await self.db.payments.find(query).sort("created_at", DESCENDING).limit(100).to_list(None)
        return [self.public(d) for d in docs]

    @staticmethod
    def public(order: dict[str, Any]) -> dict[str, Any]:
        view = {k: order.get(k) for k in (
            "out_trade_no", "account_no", "amount_fen", "channel", "status", "transaction_id", "created_at",
            "expires_at", "paid_at", "credited_at", "reason", "refunded_fen",
        )}
        view["refunded_fen"] = view["refunded_fen"] or 0
        return view

    async def detail(self, out_trade_no: str) -> dict[str, Any] | None:
        """The order with every call and notification (operations, scripts)."""
        order = await self.db.payments.find_one({"out_trade_no": out_trade_no})
        if order is None:
            return None
        events = await self.db.payment_events.find({"out_trade_no": out_trade_no}).sort("at", 1).to_list(None)
        order["calls"] = [e["call"] for e in events if e["kind"] == "call"]
        order["notifications"] = [{"at": e["at"], "outcome": e["outcome"], **e["fields"]}
                                  for e in events if e["kind"] == "notification"]
        order["credit"] = await self.db.payment_credits.find_one({"_id": out_trade_no})
        return order

    # -- notifications --------------------------------------------------------------------------
    async def handle_notification(self, raw: bytes, headers: Any = None) -> tuple[bool, str]:
        """A payment notification (v2 XML, or v3 JSON with its signature ``headers``):
        ``(ok, message)`` for the answer.

        Nothing changes unless the signature, appid, mch_id, the order and its amount all
        check out. A repeated notification of a paid order just answers SUCCESS.
        """
        try:
            fields = self.pay.parse_notification(raw, headers)
        except PaySignatureError:
            log.warning("payment notification with a bad signature refused")
            return False, "签名错误"
        except PayNotificationError as exc:
            log.warning("payment notification refused: %s", exc.reason)
            return False, "通知无效"
        out_trade_no = fields.get("out_trade_no", "")
        order = await self.db.payments.find_one({"out_trade_no": out_trade_no}) if out_trade_no else None
        if order is None:
            # signed by WeChat yet unknown here: keep it and keep WeChat retrying while someone looks
            log.error("payment notification for unknown order %s", out_trade_no)
            await self._record_notification(out_trade_no or None, fields, "unknown_order")
            return False, "订单不存在"
        if fields.get("result_code") != "SUCCESS":
            await self._record_notification(out_trade_no, fields, "not_paid")
            return True, "OK"
        if fields.get("total_fee") != str(order["amount_fen"]):
            log.error("payment notification for %s: total_fee %s, order %d", out_trade_no,
                      fields.get("total_fee"), order["amount_fen"])
            await self._record_notification(out_trade_no, fields, "amount_mismatch")
            return False, "金额不符"
        if order["status"] == "credited":  # a repeat: done already
            await self._record_notification(out_trade_no, fields, "repeat")
            return True, "OK"
        await self._record_notification(out_trade_no, fields, "accepted")
        # WeChat wants its answer within 5 s: the debt is recorded before we answer; crediting
        # goes on past the answer if it is slow (and the follow-up resumes it after a crash)
        marking = asyncio.ensure_future(self._mark_paid(order, fields))
        await asyncio.wait({marking}, timeout=NOTIFY_ANSWER_WITHIN)
        if marking.done():
            marking.result()  # a database error: WeChat is told to send it again
        else:
            self._background.add(marking)
            marking.add_done_callback(self._finished_in_background)
        return True, "OK"

    def _finished_in_background(self, task: asyncio.Future) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("crediting after the notification's answer failed (%s); the follow-up resumes it",
                        type(task.exception()).__name__)

    # -- payment code (terminal) ----------------------------------------------------------------
    async def terminal_pay(self, terminal: dict[str, Any], body: dict[str, Any], client_ip: str) -> dict[str, Any]:
        """Charge a payment code shown at a terminal; returns the final outcome for the cashier."""
        account_no, amount_fen = body.get("account_no"), body.get("amount_fen")
        auth_code, trade_no = body.get("auth_code"), body.get("terminal_trade_no")
        errors = []
        if not is_account_no(account_no):
            errors.append(field_error("account_no", "account_no"))
        errors += check_amount(amount_fen, self.config.pay_max_fen)
        if not is_payment_code(auth_code):
            errors.append(field_error("auth_code", "payment_code"))
        if trade_no is not None and not matches("out_trade_no", trade_no):
            errors.append(field_error("terminal_trade_no", "out_trade_no"))
        if errors:
            raise ValidationFailed(details=errors)
        if await self.db.accounts.find_one({"_id": account_no}, {"_id": 1}) is None:
            raise NotFound("未找到该户号，请核对后重新输入", code="account_not_found")
        terminal_id = terminal["terminal_id"]
        out_trade_no = new_trade_no()
        if trade_no:
            key = f"{terminal_id}:{trade_no}"
            try:
                await self.db.terminal_trades.insert_one({
                    "_id": key, "out_trade_no": out_trade_no, "account_no": account_no, "amount_fen": amount_fen,
                    "auth_code_tail": auth_code[-4:], "created_at": utcnow(),
                })
            except DuplicateKeyError:
                earlier = await self.db.terminal_trades.find_one({"_id": key})
                if (earlier["account_no"], earlier["amount_fen"], earlier["auth_code_tail"]) != \
                        (account_no, amount_fen, auth_code[-4:]):
                    raise Conflict("终端流水号已用于另一笔交易", code="terminal_trade_conflict") from None
                out_trade_no = earlier["out_trade_no"]
                if await self.db.payments.find_one({"out_trade_no": out_trade_no}, {"_id": 1}) is not None:
                    return await self._terminal_outcome(out_trade_no, wait=True)
        now = utcnow()
        order = {
            "out_trade_no": out_trade_no, "channel": "micropay", "account_no": account_no,
            "terminal_id": terminal_id, "terminal_trade_no": trade_no, "amount_fen": amount_fen,
            "status": "created", "body": f"{BODY}-{account_no}", "client_ip": client_ip or "127.0.0.1",
            "created_at": now, "updated_at": now,
            "expires_at": now + timedelta(seconds=self.config.pay_poll_window + self.config.wechat_timeout),
            "next_check_at": now + timedelta(seconds=self._micropay_lease()),
        }
        try:
            await self.db.payments.insert_one(order)
        except DuplicateKeyError:  # a concurrent retry of the same terminal trade got there first
            return await self._terminal_outcome(out_trade_no, wait=True)
        # the follow-up leaves the order alone until next_check_at: this request is polling it
        await self._run_micropay(order, auth_code)
        return await self._terminal_outcome(out_trade_no)

    def _micropay_lease(self) -> float:
        """How long a terminal request may be polling its order (``next_check_at`` is set that far
        ahead); after that the follow-up claims it. Every write on the order is conditional on its
        status, so a request that outlives it changes nothing a newer decision made."""
        return (self.config.pay_poll_window + self.config.wechat_timeout) * 1.5 + 5 + REVERSE_TRIES * 0.5

    async def _terminal_outcome(self, out_trade_no: str, wait: bool = False) -> dict[str, Any]:
        deadline = time.monotonic() + (self._micropay_lease() if wait else 0)
        while True:
            order = await self.db.payments.find_one({"out_trade_no": out_trade_no})
            status = order["status"] if order else "failed"
            if status in ("paid", "credited", "failed", "reversed", "closed") or time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.2)
        answer: dict[str, Any] = {"out_trade_no": out_trade_no}
        if status in ("paid", "credited"):
            answer.update(status="paid", transaction_id=order.get("transaction_id"))
        elif status in ("reversed", "closed"):
            answer.update(status="reversed", reason=order.get("reason") or REVERSED_REASON)
        elif status == "failed":
            answer.update(status="failed", reason=(order or {}).get("reason") or FAIL_REASONS["ORDERNOTEXIST"])
        else:
            answer.update(status="pending", reason="支付结果确认中，请稍后用同一终端流水号重试查询")
        if order:
            answer.update(account_no=order["account_no"], amount_fen=order["amount_fen"])
        return answer

    async def _run_micropay(self, order: dict[str, Any], auth_code: str) -> None:
        await self._set_status(order, "pending", ("created",))
        try:
            result: PayResult | None = await self.pay.micropay(
                order["out_trade_no"], order["amount_fen"], order["body"], auth_code, order["client_ip"])
        except PayReturnError as exc:
            await self._set_status(order, "failed", OPEN, reason=f"微信支付拒绝了请求：{exc.return_msg}")
            return
        except WeChatUnavailable:
            result = None  # outcome unknown (timeout, unreadable or forged answer): ask
        # the window starts when micropay has answered (or timed out): at most timeout + window
        deadline = time.monotonic() + self.config.pay_poll_window
        if result is not None and result.ok:
            await self._mark_paid(order, result)
            return
        err = result.get("err_code") if result is not None else None
        if result is not None and err not in ("USERPAYING", "SYSTEMERROR", "BANKERROR"):
            if err == "NOTENOUGH":  # the order exists at WeChat as PAYERROR: revoke it
                await self._reverse(order, final_status="failed", reason=FAIL_REASONS[err])
            else:
                reason = FAIL_REASONS.get(err) or f"支付失败：{result.get('err_code_des') or err}"
                await self._set_status(order, "failed", OPEN, reason=reason, err_code=err)
            return
        if err != "USERPAYING":
            await asyncio.sleep(min(self.config.pay_query_delay, max(0.0, deadline - time.monotonic())))
        while True:
            if await self._query_micropay(order, final=False):
                return
            if time.monotonic() >= deadline:
                break
            await asyncio.sleep(min(self.config.pay_poll_interval, max(0.05, deadline - time.monotonic())))
        await self._query_micropay(order, final=True)

    async def _query_micropay(self, order: dict[str, Any], final: bool) -> bool:
        """One look at a payment-code order; ``True`` once it is settled either way.

        With ``final`` (the poll window is over) anything short of paid is reversed.
        """
        try:
            result = await self.pay.orderquery(order["out_trade_no"])
        except (WeChatUnavailable, PayReturnError):
            result = None
        state = result.get("trade_state") if result is not None and result.ok else None
        if state in ("SUCCESS", "REFUND"):
            await self._mark_paid(order, result)
            return True
        if state in ("REVOKED", "CLOSED"):
            await self._set_status(order, "reversed", OPEN, reason=REVERSED_REASON)
            return True
        if state == "PAYERROR":
            await self._reverse(order, final_status="failed",
                                reason=FAIL_REASONS["PAYERROR"] if not result.get("trade_state_desc")
                                else f"支付失败：{result['trade_state_desc']}")
            return True
        if final:
            await self._reverse(order, final_status="reversed", reason=REVERSED_REASON)
            return True
        return False

    async def _reverse(self, order: dict[str, Any], final_status: str, reason: str) -> bool:
        """Revoke a payment-code order, calling again while WeChat says ``recall=Y``."""
        for attempt in range(REVERSE_TRIES):
            try:
                result = await self.pay.reverse(order["out_trade_no"])
            except (WeChatUnavailable, PayReturnError):
                result = None
            if result is not None:
                if result.ok:
                    await self._set_status(order, final_status, (*OPEN, "paid"), reason=reason)
                    return True
                err = result.get("err_code")
                if err == "ORDERNOTEXIST":  # never created: nothing was charged
                    await self._set_status(order, "failed", OPEN, reason=FAIL_REASONS["ORDERNOTEXIST"])
                    return True
                if result.get("recall") != "Y":
                    # REVERSE_EXPIRE, TRADE_STATE_ERROR, ...: let the order's state speak
                    log.warning("reverse %s refused: %s", order["out_trade_no"], err)
                    return False
            await asyncio.sleep(min(1.0, 0.2 * (attempt + 1)))
        return False

    # -- deciding from WeChat's word ------------------------------------------------------------
    async def resolve(self, order: dict[str, Any], query_now: bool = False) -> None:
        """Bring an unfinished order forward: query WeChat and act (the follow-up and GET)."""
        otn = order["out_trade_no"]
        if order["status"] == "paid":
            await self.credit(otn)
            return
        if order["status"] not in OPEN:
            return
        if order["channel"] == "micropay":
            # claim the order: one look at a time, and none while the terminal request polls it
            now = utcnow()
            fresh = await self.db.payments.find_one_and_update(
                {"out_trade_no": otn, "status": {"$in": list(OPEN)}, "next_check_at": {"$lte": now}},
                {"$set": {"next_check_at": now + timedelta(seconds=self._micropay_lease())}},
                return_document=ReturnDocument.AFTER)
            if fresh is not None:
                await self._query_micropay(fresh, final=True)
            return
        try:
            result = await self.pay.orderquery(otn)
        except (WeChatUnavailable, PayReturnError):
            return
        now = utcnow()
        if result.ok:
            state = result.get("trade_state")
            if state in ("SUCCESS", "REFUND"):
                await self._mark_paid(order, result)
            elif state == "NOTPAY":
                if now >= order["expires_at"]:
                    await self._close(order)
                else:
                    await self.db.payments.update_one(
                        {"out_trade_no": otn, "status": {"$in": list(OPEN)}},
                        {"$set": {"next_check_at": self._next_jsapi_check(now, order["expires_at"])}})
            elif state == "CLOSED":
                await self._set_status(order, "closed", OPEN)
            elif state == "REVOKED":
                await self._set_status(order, "reversed", OPEN)
            elif state == "PAYERROR":
                await self._set_status(order, "failed", OPEN, reason=result.get("trade_state_desc"))
        elif result.get("err_code") == "ORDERNOTEXIST" and now >= order["expires_at"]:
            await self._set_status(order, "failed", OPEN, reason="下单未成功")
        if result.ok and result.get("trade_state") == "NOTPAY":
            return
        await self.db.payments.update_one(  # still undecided: look again later
            {"out_trade_no": otn, "status": {"$in": list(OPEN)}},
            {"$set": {"next_check_at": now + timedelta(seconds=self.config.pay_followup_interval)}})

    async def _close(self, order: dict[str, Any]) -> None:
        try:
            result = await self.pay.closeorder(order["out_trade_no"])
        except (WeChatUnavailable, PayReturnError):
            return
        err = result.get("err_code")
        if result.ok or err == "ORDERCLOSED":
            await self._set_status(order, "closed", OPEN, reason="订单超时未支付，已关闭")
        elif err == "ORDERPAID":
            try:
                query = await self.pay.orderquery(order["out_trade_no"])
            except (WeChatUnavailable, PayReturnError):
                return
            if query.ok and query.get("trade_state") in ("SUCCESS", "REFUND"):
                await self._mark_paid(order, query)

    async def _set_status(self, order: dict[str, Any], status: str, from_statuses: tuple[str, ...],
                          **fields: Any) -> bool:
        now = utcnow()
        values = {"status": status, "updated_at": now, **{k: v for k, v in fields.items() if v is not None}}
        if status in FINAL:
            values["next_check_at"] = None
        result = await self.db.payments.update_one(
            {"out_trade_no": order["out_trade_no"], "status": {"$in": list(from_statuses)}}, {"$set": values})
        if result.modified_count:
            log.info("payment %s -> %s", order["out_trade_no"], status)
        return bool(result.modified_count)

    # -- crediting ------------------------------------------------------------------------------
    async def _mark_paid(self, order: dict[str, Any], fields: dict[str, str]) -> bool:
        """WeChat says paid: record the debt once, mark the order paid, and credit it."""
        otn = order["out_trade_no"]
        if fields.get("total_fee") != str(order["amount_fen"]):
            log.error("payment %s: WeChat reports %s fen, order is %d: not credited", otn,
                      fields.get("total_fee"), order["amount_fen"])
            await self.db.payments.update_one({"out_trade_no": otn}, {"$set": {"anomaly": "amount_mismatch"}})
            return False
        paid_at = wechat_time_to_utc(fields.get("time_end")) or utcnow()
        transaction_id = fields.get("transaction_id")
        try:
            await self.db.payment_credits.insert_one({
                "_id": otn, "account_no": order["account_no"], "amount_fen": order["amount_fen"],
                "transaction_id": transaction_id, "paid_at": paid_at, "state": "owed", "created_at": utcnow(),
            })
        except DuplicateKeyError:
            pass
        await self._set_status(order, "paid", (*OPEN, "closed", "failed"), transaction_id=transaction_id,
                               paid_at=paid_at, next_check_at=utcnow() + timedelta(seconds=2))
        await self.credit(otn)
        return True

    async def credit(self, out_trade_no: str) -> bool:
        """Finish crediting a paid order (idempotent, resumable, safe to run concurrently);
        ``False`` if something is left for the follow-up."""
        credit = await self.db.payment_credits.find_one({"_id": out_trade_no})
        if credit is None:
            return False
        order = await self.db.payments.find_one({"out_trade_no": out_trade_no})
        if credit["state"] == "owed":
            if not await self._apply(credit):
                return False
            credit = await self.db.payment_credits.find_one({"_id": out_trade_no})
        await self._set_status(order, "credited", (*OPEN, "paid", "closed", "failed"),
                               credited_at=credit.get("applied_at") or utcnow())
        if credit["state"] == "applied" and await self._announce(order, credit):
            await self.db.payment_credits.update_one({"_id": out_trade_no, "state": "applied"},
                                                     {"$set": {"state": "done"}})
        return True

    async def _step_pause(self) -> None:
        """``WX_CREDIT_STEP_DELAY``: a test-only pause between crediting steps (0 in service)."""
        if self.config.credit_step_delay:
            await asyncio.sleep(self.config.credit_step_delay)

    async def _apply(self, credit: dict[str, Any]) -> bool:
        otn, account_no, amount = credit["_id"], credit["account_no"], credit["amount_fen"]
        await self._step_pause()
        # balance and marker in one write, matching only while the marker is absent
        await self.db.accounts.update_one(
            {"_id": account_no, "credited": {"$ne": otn}},
            {"$inc": {"balance_fen": amount}, "$push": {"credited": otn}},
        )
        if await self.db.accounts.find_one({"_id": account_no, "credited": otn}, {"_id": 1}) is None:
            log.error("payment %s: account %s not found or not credited; retried later", otn, account_no)
            return False
        await self._step_pause()
        settlements = await self._settle_bills(account_no, otn, amount, credit["paid_at"])
        if settlements is None:
            return False
        await self._step_pause()
        await self.db.payment_credits.update_one({"_id": otn, "state": "owed"}, {"$set": {
            "state": "applied", "applied_at": utcnow(), "settlements": settlements,
        }})
        log.info("payment %s credited %d fen to %s", otn, amount, account_no)
        return True

    async def _settle_bills(self, account_no: str, otn: str, amount: int,
                            at: datetime) -> list[dict[str, Any]] | None:
        """Pay the account's open bills, oldest period first, from this payment (once per bill);
        the settlements made, or ``None`` if concurrent writers kept changing the bills (the
        follow-up resumes it).

        The bills are those of the 36 months up to the payment (``history_window``): what the
        customer was shown as owed. Counted from the payment's time, not from now, so a resumed
        settlement reads the same bills. Each bill write names the amount and paid figure it
        was computed from: if another writer got there first it matches nothing, and the bills
        are read again.
        """
        for _ in range(BILL_WRITE_TRIES):
            by_period = await read_bills(self.db, account_no, *history_window(at))
            bills = [by_period[p] for p in sorted(by_period)]
            done = [{"period": b["period"], "amount_fen": s["amount_fen"]} for b in bills
                    for s in b.get("settlements", []) if s.get("out_trade_no") == otn and not s.get("refund_no")]
            remaining = amount - sum(d["amount_fen"] for d in done)
            for bill in bills:
                if remaining <= 0:
                    return done
                if any(s.get("out_trade_no") == otn for s in bill.get("settlements", [])):
                    continue
                paid_before = int(bill.get("paid_fen", 0))
                owed = int(bill.get("amount_fen", 0)) - paid_before
                if owed <= 0:
                    continue
                part = min(owed, remaining)
                result = await self.db.bills.update_one(
                    {"_id": bill["_id"], "amount_fen": bill["amount_fen"], "paid_fen": paid_before,
                     "settlements.out_trade_no": {"$ne": otn}},
                    {"$inc": {"paid_fen": part},
                     "$set": {"status": bill_status(bill["amount_fen"], paid_before + part), "updated_at": utcnow()},
                     "$push": {"settlements": {"out_trade_no": otn, "amount_fen": part, "at": at}}},
                )
                if not result.modified_count:
                    break  # changed meanwhile: read again
                done.append({"period": bill["period"], "amount_fen": part})
                remaining -= part
            else:
                return done
            await asyncio.sleep(secrets.randbelow(20) / 1000)
        log.warning("payment %s: bills of %s kept changing; settlement left to the follow-up", otn, account_no)
        return None

    async def _announce(self, order: dict[str, Any], credit: dict[str, Any]) -> bool:
        """The receipt to the customer and ``payment.credited`` to the marketing system, each
        queued once (outbox dedupe keys). The only place that talks to the outbox."""
        otn = order["out_trade_no"]
        paid_at = credit["paid_at"].astimezone(SHANGHAI).strftime("%Y-%m-%d %H:%M")
        data = {"account_no": order["account_no"], "amount_fen": order["amount_fen"], "paid_at": paid_at}
        page = f"pages/payments/result?out_trade_no={otn}"
        if order.get("user_id"):
            await self.notifications.notify_user(order["user_id"], "payment_received", data, page, f"payment:{otn}")
        else:  # a terminal payment: every user who bound the account
            for user_id in await self.accounts.user_ids_of(order["account_no"]):
                await self.notifications.notify_user(user_id, "payment_received", data, page,
                                                     f"payment:{otn}:{user_id}")
        await self.outbox.enqueue("webhook", f"webhook:payment.credited:{otn}", {
            "event": "payment.credited",
            "body": {"out_trade_no": otn, "transaction_id": credit.get("transaction_id"),
                     "account_no": order["account_no"], "amount_fen": order["amount_fen"],
                     "channel": order["channel"], "paid_at": credit["paid_at"].isoformat(),
                     "settlements": credit.get("settlements", []), "terminal_id": order.get("terminal_id")},
        })
        return True

    # -- the follow-up --------------------------------------------------------------------------
    async def followup_once(self, limit: int = 200) -> dict[str, int]:
        """One pass over unfinished work: credits not done, orders not final and due a look."""
        counts = {"credits": 0, "orders": 0}
        now = utcnow()
        credits = await self.db.payment_credits.find(
            {"state": {"$in": ["owed", "applied"]}, "created_at": {"$lte": now - timedelta(seconds=1)}}
        ).limit(limit).to_list(None)
        for credit in credits:
            try:
                await self.credit(credit["_id"])
                counts["credits"] += 1
            except PyMongoError as exc:
                log.warning("follow-up credit %s: %s", credit["_id"], type(exc).__name__)
        orders = await self.db.payments.find(
            {"status": {"$in": [*OPEN, "paid"]}, "next_check_at": {"$lte": now}}).limit(limit).to_list(None)
        for order in orders:
            try:
                await self.resolve(order)
                counts["orders"] += 1
            except (PyMongoError, AppError) as exc:
                log.warning("follow-up order %s: %s", order["out_trade_no"], type(exc).__name__)
        return counts

    # -- refunds --------------------------------------------------------------------------------
    async def refund(self, out_trade_no: str, amount_fen: int, refund_no: str, reason: str | None = None) -> dict:
        """Refund part or all of a credited order, once per ``refund_no``; debits the balance once.

        The money refunded comes first out of what the payment left as balance; beyond that,
        bills this payment settled are re-opened, newest period first. Each step is a
        single-document write that is a no-op when repeated, so running the same refund again
        (after a crash, or concurrently) finishes it and never doubles it:

        1. the order reserves the amount: ``refund_reserved_fen += amount`` and ``refund_nos +=
           [refund_no]`` in one update that matches only if the total stays within the order's
           amount and the number is not there yet (two refunds cannot together exceed it);
        2. the refund document ``{_id: refund_no}`` is written once (``requested``), WeChat is
           asked (it too is idempotent per refund number), the answer recorded (``accepted`` or
           ``failed``, which gives the reservation back);
        3. the account: ``balance_fen -= amount`` with the marker ``refunded += [refund_no]``,
           matching only while the marker is absent; the bills (``_reopen_bills``); the order's
           ``refunded_fen += amount`` with its marker; the refund becomes ``done``.
        """
        errors = check_amount(amount_fen, 10**12)
        if not matches("refund_no", refund_no):
            errors.append(field_error("refund_no", "refund_no"))
        if errors:
            raise ValidationFailed(details=errors)
        order = await self.db.payments.find_one({"out_trade_no": out_trade_no})
        if order is None:
            raise NotFound("未找到该交费订单", code="payment_not_found")
        if order["status"] != "credited":
            raise Conflict(f"订单状态为 {order['status']}，只有已入账的订单可以退款", code="payment_not_refundable")
        refund = await self.db.payment_refunds.find_one({"_id": refund_no})
        if refund is None:
            if refund_no not in order.get("refund_nos", []):
                limit = order["amount_fen"] - amount_fen
                reserved = await self.db.payments.update_one(
                    {"out_trade_no": out_trade_no, "refund_nos": {"$ne": refund_no},
                     "$or": [{"refund_reserved_fen": {"$exists": False}},
                             {"refund_reserved_fen": {"$lte": limit}}]},
                    {"$inc": {"refund_reserved_fen": amount_fen}, "$push": {"refund_nos": refund_no}},
                )
                if not reserved.modified_count and await self.db.payments.find_one(
                        {"out_trade_no": out_trade_no, "refund_nos": refund_no}, {"_id": 1}) is None:
                    raise Conflict("退款总额超过订单金额", code="refund_exceeds_payment")
            await self.db.payment_refunds.update_one({"_id": refund_no}, {"$setOnInsert": {
                "out_trade_no": out_trade_no, "account_no": order["account_no"], "amount_fen": amount_fen,
                "reason": reason, "state": "requested", "created_at": utcnow()}}, upsert=True)
            refund = await self.db.payment_refunds.find_one({"_id": refund_no})
        if refund["out_trade_no"] != out_trade_no or refund["amount_fen"] != amount_fen:
            raise Conflict("退款单号已用于其他退款", code="refund_no_conflict")
        if refund["state"] == "requested":
            result = None
            for attempt in range(3):
                try:
                    result = await self.pay.refund(out_trade_no, refund_no, order["amount_fen"], amount_fen, reason)
                except WeChatUnavailable:
                    result = None
                if result is not None and result.get("err_code") not in ("SYSTEMERROR", "BIZERR_NEED_RETRY"):
                    break
                await asyncio.sleep(0.5 * (attempt + 1))
            if result is None or result.get("err_code") in ("SYSTEMERROR", "BIZERR_NEED_RETRY"):
                raise WeChatUnavailable(details={"refund_no": refund_no, "hint": "run again with the same number"})
            if not result.ok:
                failed = await self.db.payment_refunds.update_one({"_id": refund_no, "state": "requested"}, {"$set": {
                    "state": "failed", "err_code": result.get("err_code"), "err_code_des": result.get("err_code_des")}})
                if failed.modified_count:  # give the reservation back, once
                    await self.db.payments.update_one(
                        {"out_trade_no": out_trade_no, "refund_nos": refund_no},
                        {"$inc": {"refund_reserved_fen": -amount_fen}, "$pull": {"refund_nos": refund_no}})
                raise AppError(f"微信支付拒绝退款：{result.get('err_code_des') or result.get('err_code')}",
                               code="refund_refused", status=502)
            await self.db.payment_refunds.update_one({"_id": refund_no, "state": "requested"}, {"$set": {
                "state": "accepted", "refund_id": result.get("refund_id"), "accepted_at": utcnow()}})
            refund = await self.db.payment_refunds.find_one({"_id": refund_no})
        if refund["state"] == "accepted":
            await self._debit_refund(order, refund)
            refund = await self.db.payment_refunds.find_one({"_id": refund_no})
        return refund

    async def _debit_refund(self, order: dict[str, Any], refund: dict[str, Any]) -> None:
        otn, refund_no, account_no = order["out_trade_no"], refund["_id"], order["account_no"]
        await self.db.accounts.update_one(
            {"_id": account_no, "refunded": {"$ne": refund_no}},
            {"$inc": {"balance_fen": -refund["amount_fen"]}, "$push": {"refunded": refund_no}},
        )
        await self._reopen_bills(order, refund_no)
        await self.db.payments.update_one(
            {"out_trade_no": otn, "refunds_done": {"$ne": refund_no}},
            {"$inc": {"refunded_fen": refund["amount_fen"]}, "$push": {"refunds_done": refund_no},
             "$set": {"updated_at": utcnow()}})
        await self.db.payment_refunds.update_one({"_id": refund_no, "state": "accepted"},
                                                 {"$set": {"state": "done", "done_at": utcnow()}})

    async def _reopen_bills(self, order: dict[str, Any], refund_no: str) -> None:
        """Bring the bills this payment settled down to what the refunds leave of it.

        After refunds totalling R, the payment's settlements may net at most ``amount - R``;
        what they net beyond that is taken back from its bills, newest period first, each with
        a negative settlement entry. The target is recomputed from the accepted refunds on
        every pass, and each bill write names the paid figure it was computed from, so passes
        for several refunds of one order, run together or again, take back exactly the excess.
        """
        otn, account_no = order["out_trade_no"], order["account_no"]
        for _ in range(BILL_WRITE_TRIES):
            refunds = await self.db.payment_refunds.find(
                {"out_trade_no": otn, "state": {"$in": ["accepted", "done"]}}, {"amount_fen": 1}).to_list(None)
            refunded_total = sum(r["amount_fen"] for r in refunds)
            bills = await self.db.bills.find({"account_no": account_no, "settlements.out_trade_no": otn}) \
                .sort("period", DESCENDING).to_list(None)
            settled = sum(s["amount_fen"] for b in bills for s in b.get("settlements", [])
                          if s.get("out_trade_no") == otn and not s.get("refund_no"))
            net = sum(s["amount_fen"] for b in bills for s in b.get("settlements", []) if s.get("out_trade_no") == otn)
            excess = net - min(settled, order["amount_fen"] - refunded_total)
            for bill in bills:
                if excess <= 0:
                    return
                mine = sum(s["amount_fen"] for s in bill.get("settlements", []) if s.get("out_trade_no") == otn)
                part = min(mine, excess)
                if part <= 0:
                    continue
                paid_before = int(bill.get("paid_fen", 0))
                result = await self.db.bills.update_one(
                    {"_id": bill["_id"], "amount_fen": bill["amount_fen"], "paid_fen": paid_before},
                    {"$inc": {"paid_fen": -part},
                     "$set": {"status": bill_status(bill["amount_fen"], paid_before - part)
                              if paid_before - part > 0 else "unpaid", "updated_at": utcnow()},
                     "$push": {"settlements": {"out_trade_no": otn, "refund_no": refund_no, "amount_fen": -part,
                                               "at": utcnow()}}},
                )
                if not result.modified_count:
                    break  # changed meanwhile: read again
                excess -= part
            else:
                return
            await asyncio.sleep(secrets.randbelow(20) / 1000)
        raise Conflict("账单正在变动，请用同一退款单号重试", code="payment_busy")

    # -- reconciliation -------------------------------------------------------------------------
    async def reconcile(self, day: date) -> dict[str, Any]:
        """Compare WeChat's bill of one Beijing day with ``payments``: every difference, listed."""
        try:
            text = await self.pay.downloadbill(day)
        except PayBillNotFound:
            text = ""
        wechat_pay, wechat_refunds = parse_bill(text)
        start = datetime(day.year, day.month, day.day, tzinfo=SHANGHAI).astimezone(UTC)
        end = start + timedelta(days=1)
        ours = {o["out_trade_no"]: o async for o in self.db.payments.find({"paid_at": {"$gte": start, "$lt": end}})}
        differences: list[dict[str, Any]] = []
        for otn, row in wechat_pay.items():
            order = ours.get(otn) or await self.db.payments.find_one({"out_trade_no": otn})
            if order is None or order.get("paid_at") is None:
                differences.append({"kind": "missing_ours", "out_trade_no": otn, "wechat": row,
                                    "ours": order and order["status"]})
                continue
            if order["amount_fen"] != row["amount_fen"]:
                differences.append({"kind": "amount_mismatch", "out_trade_no": otn,
                                    "wechat": row["amount_fen"], "ours": order["amount_fen"]})
            expected = "reversed" if row["status"] == "REVOKED" else "credited"
            if order["status"] != expected:
                differences.append({"kind": "status_mismatch", "out_trade_no": otn,
                                    "wechat": row["status"], "ours": order["status"]})
        for otn, order in ours.items():
            if otn not in wechat_pay:
                differences.append({"kind": "missing_wechat", "out_trade_no": otn, "ours": order["status"],
                                    "amount_fen": order["amount_fen"]})
        our_refunds = {r["_id"]: r async for r in self.db.payment_refunds.find(
            {"accepted_at": {"$gte": start, "$lt": end}})}
        for refund_no, row in wechat_refunds.items():
            refund = our_refunds.get(refund_no) or await self.db.payment_refunds.find_one({"_id": refund_no})
            if refund is None:
                differences.append({"kind": "refund_missing_ours", "refund_no": refund_no, "wechat": row})
            elif refund["amount_fen"] != row["amount_fen"]:
                differences.append({"kind": "refund_amount_mismatch", "refund_no": refund_no,
                                    "wechat": row["amount_fen"], "ours": refund["amount_fen"]})
        for refund_no, refund in our_refunds.items():
            if refund_no not in wechat_refunds:
                differences.append({"kind": "refund_missing_wechat", "refund_no": refund_no,
                                    "amount_fen": refund["amount_fen"]})
        return {"date": day.isoformat(), "wechat_payments": len(wechat_pay), "our_payments": len(ours),
                "wechat_refunds": len(wechat_refunds), "differences": differences}


def parse_bill(text: str) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """WeChat's bill text: ``(payments by out_trade_no, refunds by out_refund_no)``, amounts in fen."""
    lines = [line for line in text.replace("\r\n", "\n").split("\n") if line.strip()]
    if not lines:
        return {}, {}
    header = lines[0].split(",")
    payments: dict[str, dict[str, Any]] = {}
    refunds: dict[str, dict[str, Any]] = {}
    for line in lines[1:]:
        if line.startswith("总交易单数"):
            break
        row = dict(zip(header, (cell.lstrip("`") for cell in line.split(",")), strict=False))
        status = row.get("交易状态", "")
        if status == "REFUND":
            refunds[row["商户退款单号"]] = {"out_trade_no": row["商户订单号"],
                                          "amount_fen": yuan_to_fen(row.get("退款金额", "0"))}
        else:
            payments[row["商户订单号"]] = {"status": status, "transaction_id": row.get("微信订单号"),
                                         "amount_fen": yuan_to_fen(row.get("订单金额") or row.get("应结订单金额", "0"))}
    return payments, refunds
