"""Refunds of credited orders, once per refund number."""

from __future__ import annotations

import asyncio
import logging
import secrets
from typing import Any

from pymongo import DESCENDING

from ...db import utcnow
from ...errors import AppError, Conflict, NotFound, ValidationFailed, WeChatUnavailable
from ...validators import field_error, matches
from ..billing import bill_status
from .common import (
    BILL_WRITE_TRIES,
    check_amount,
)

log = logging.getLogger(__package__)



class Refunds:
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

