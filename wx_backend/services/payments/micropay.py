"""Payment code at the service-hall terminals (``micropay``): charge, poll, reverse."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import timedelta
from typing import Any

from pymongo.errors import DuplicateKeyError

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

