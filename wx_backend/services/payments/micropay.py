"""Payment code at the service-hall terminals (``micropay``): charge, poll, reverse.

WeChat's fixed times rule the flow: an order still waiting for the customer's password is
revoked by WeChat itself about ``USERPAYING_LIMIT`` (45 s) after it was made, and a reverse
sooner than ``REVERSE_AFTER`` (15 s) after the order is refused. So the terminal request polls
for ``WX_PAY_POLL_WINDOW`` seconds (15 to 45, checked at start), then reverses, and while
WeChat answers "still paying" (``recall=Y``) it keeps querying and reversing until WeChat has
revoked the order. The cashier's answer is paid, failed or reversed within ``terminal_bound``
(45 s + 2 x ``WX_WECHAT_TIMEOUT`` + 5 s after the scan); only when WeChat cannot be reached at
all may it be "pending", and the follow-up finishes the order. ``WX_PAY_TIME_SCALE`` (tests
only) shrinks WeChat's times in proportion, as ``WX_SANDBOX_TIME_SCALE`` does in the sandbox.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import timedelta
from typing import Any

from pymongo.errors import DuplicateKeyError

from ...config import Config, ConfigError
from ...db import utcnow
from ...errors import Conflict, NotFound, ValidationFailed, WeChatUnavailable
from ...validators import field_error, is_account_no, is_payment_code, matches
from ...wechat.pay import (
    PayResult,
    PayReturnError,
)
from .common import (
    BODY,
    FAIL_REASONS,
    OPEN,
    REVERSE_TRIES,
    REVERSED_REASON,
    check_amount,
    new_trade_no,
)

log = logging.getLogger(__package__)

USERPAYING_LIMIT = 45.0  # seconds: WeChat revokes a payment-code order still waiting for the password
REVERSE_AFTER = 15.0  # seconds: WeChat refuses a reverse sooner after the order
DECLINED = ("NOTENOUGH", "NOTSUPORTCARD")  # the payer's means refused: the order is PAYERROR, no money moved


def check_timing(config: Config) -> None:
    """Start-up check: the poll window must let a reverse be legal (≥ 15 s) and end before WeChat
    revokes the order itself (≤ 45 s), in WeChat's seconds (``WX_PAY_TIME_SCALE``)."""
    scale = config.pay_time_scale
    if scale <= 0 or (scale != 1 and config.env == "prod"):
        raise ConfigError("WX_PAY_TIME_SCALE is for tests only: leave it at 1 in production")
    window = config.pay_poll_window / scale
    if not REVERSE_AFTER <= window <= USERPAYING_LIMIT:
        raise ConfigError(
            f"WX_PAY_POLL_WINDOW must be {REVERSE_AFTER:.0f} to {USERPAYING_LIMIT:.0f} s: WeChat "
            f"refuses a reverse within 15 s of the order and revokes it by itself after 45 s "
            f"(now {window:g} s)"
        )


def terminal_bound(config: Config) -> float:
    """Seconds after the scan by which the terminal has its final answer (WeChat reachable)."""
    return (USERPAYING_LIMIT + 5) * config.pay_time_scale + 2 * config.wechat_timeout


class Micropay:
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
                await self.db.terminal_trades.insert_one(
                    {
                        "_id": key,
                        "out_trade_no": out_trade_no,
                        "account_no": account_no,
                        "amount_fen": amount_fen,
                        "auth_code_tail": auth_code[-4:],
                        "created_at": utcnow(),
                    }
                )
            except DuplicateKeyError:
                earlier = await self.db.terminal_trades.find_one({"_id": key})
                if (earlier["account_no"], earlier["amount_fen"], earlier["auth_code_tail"]) != (
                    account_no,
                    amount_fen,
                    auth_code[-4:],
                ):
                    raise Conflict("终端流水号已用于另一笔交易", code="terminal_trade_conflict") from None
                out_trade_no = earlier["out_trade_no"]
                if await self.db.payments.find_one({"out_trade_no": out_trade_no}, {"_id": 1}) is not None:
                    return await self._terminal_outcome(out_trade_no, wait=True)
        now = utcnow()
        order = {
            "out_trade_no": out_trade_no,
            "channel": "micropay",
            "account_no": account_no,
            "terminal_id": terminal_id,
            "terminal_trade_no": trade_no,
            "amount_fen": amount_fen,
            "status": "created",
            "body": f"{BODY}-{account_no}",
            "client_ip": client_ip or "127.0.0.1",
            "created_at": now,
            "updated_at": now,
            "expires_at": now + timedelta(seconds=terminal_bound(self.config)),
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
        return terminal_bound(self.config) * 1.5 + 5

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
        started = time.monotonic()  # WeChat's clock for the order starts about now
        await self._set_status(order, "pending", ("created",))
        try:
            result: PayResult | None = await self.pay.micropay(
                order["out_trade_no"], order["amount_fen"], order["body"], auth_code, order["client_ip"]
            )
        except PayReturnError as exc:
            await self._set_status(order, "failed", OPEN, reason=f"微信支付拒绝了请求：{exc.return_msg}")
            return
        except WeChatUnavailable:
            result = None  # outcome unknown (timeout, unreadable or forged answer): ask
        # the window starts when micropay has answered (or timed out)
        deadline = time.monotonic() + self.config.pay_poll_window
        if result is not None and result.ok:
            await self._mark_paid(order, result)
            return
        err = result.get("err_code") if result is not None else None
        if result is not None and err not in ("USERPAYING", "SYSTEMERROR", "BANKERROR"):
            # NOTENOUGH, NOTSUPORTCARD, AUTHCODEEXPIRE, BUYER_MISMATCH...: nothing was charged; as
            # WeChat advises, the cashier asks for another means (no reverse of a PAYERROR order)
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
        await self._end_unpaid(order, started)

    async def _end_unpaid(self, order: dict[str, Any], started: float) -> None:
        """The window is over and the order is not paid: reverse it (never within 15 s of the
        order), and while WeChat says the customer is still paying, query and reverse again
        until WeChat settles it either way or revokes it by itself (45 s)."""
        scale = self.config.pay_time_scale
        reverse_from = started + REVERSE_AFTER * scale
        give_up = started + terminal_bound(self.config) - self.config.wechat_timeout
        while True:
            await asyncio.sleep(max(0.0, reverse_from - time.monotonic()))
            if await self._reverse_once(order, "reversed", REVERSED_REASON):
                return
            if await self._query_micropay(order, final=False):
                return
            if time.monotonic() >= give_up:
                log.warning(
                    "payment %s still unsettled at WeChat after %.0f s; the follow-up continues",
                    order["out_trade_no"],
                    time.monotonic() - started,
                )
                return
            await asyncio.sleep(self.config.pay_poll_interval)

    async def _query_micropay(self, order: dict[str, Any], final: bool) -> bool:
        """One look at a payment-code order; ``True`` once it is settled either way.

        With ``final`` (the follow-up, long after the order) anything short of paid is reversed.
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
        if state == "PAYERROR":  # nothing was charged
            await self._set_status(
                order,
                "failed",
                OPEN,
                reason=FAIL_REASONS["PAYERROR"]
                if not result.get("trade_state_desc")
                else f"支付失败：{result['trade_state_desc']}",
            )
            return True
        if final:
            await self._reverse(order, final_status="reversed", reason=REVERSED_REASON)
            return True
        return False

    async def _reverse(self, order: dict[str, Any], final_status: str, reason: str) -> bool:
        """Revoke a payment-code order, calling again while WeChat says ``recall=Y``."""
        for attempt in range(REVERSE_TRIES):
            if await self._reverse_once(order, final_status, reason):
                return True
            await asyncio.sleep(min(1.0, 0.2 * (attempt + 1)))
        return False

    async def _reverse_once(self, order: dict[str, Any], final_status: str, reason: str) -> bool:
        """One reverse; ``True`` when the order is settled by it."""
        try:
            result = await self.pay.reverse(order["out_trade_no"])
        except (WeChatUnavailable, PayReturnError):
            return False
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
