"""Refunds of credited orders, once per refund number, booked when WeChat says refunded.

A refund moves ``requested -> accepted -> succeeded``, or ends ``closed`` (REFUNDCLOSE),
``change`` (CHANGE: the money could not reach the customer and waits at the merchant for
manual handling) or ``failed`` (WeChat refused the request). ``/secapi/pay/refund`` answering
SUCCESS only means *accepted*: the outcome comes from the refund notification
(``handle_refund_notification``) or from ``refundquery`` (the follow-up, ``refunds_followup``).
The balance is debited and bills re-opened at ``succeeded`` only. Every step is a
single-document write that is a no-op when repeated:

1. the order reserves the amount: ``refund_reserved_fen += amount`` and ``refund_nos +=
   [refund_no]`` in one update that matches only if the total stays within the order's amount
   and the number is not there yet (two refunds cannot together exceed it);
2. the refund document ``{_id: refund_no}`` is written once (``requested``) and WeChat is asked
   (idempotent per refund number too). ``accepted`` on SUCCESS; ``failed`` on a final refusal,
   which gives the reservation back; still ``requested`` after SYSTEMERROR, BIZERR_NEED_RETRY,
   FREQUENCY_LIMITED or NOTENOUGH (the merchant's balance), which the follow-up asks again;
3. at SUCCESS (``succeeded``): the account's ``balance_fen -= amount`` with the marker
   ``refunded += [refund_no]``, matching only while the marker is absent; the bills
   (``_reopen_bills``); the order's ``refunded_fen += amount`` with its marker; ``booked_at``.
   REFUNDCLOSE gives the reservation back; CHANGE keeps it and is logged for the operator.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from datetime import timedelta
from typing import Any

from pymongo import DESCENDING
from pymongo.errors import PyMongoError

from ...db import utcnow
from ...errors import AppError, Conflict, NotFound, ValidationFailed, WeChatUnavailable
from ...validators import field_error, matches
from ...wechat.pay import PayReturnError
from ..billing import bill_status
from .common import BILL_WRITE_TRIES, check_amount, read_notification

log = logging.getLogger(__package__)

RETRY_NOW = ("SYSTEMERROR", "BIZERR_NEED_RETRY")  # asked again at once, then by the follow-up
RETRY_LATER = ("NOTENOUGH", "FREQUENCY_LIMITED")  # not final: the follow-up asks again later
REFUSED = {  # final refusals, as the operator reads them
    "TRADE_OVERDUE": "订单已超过一年退款期限，微信支付不再受理，请通过其他方式退款",
    "USER_ACCOUNT_ABNORMAL": "用户微信账户异常或已注销，无法原路退款，请通过其他方式退款",
    "REFUND_FEE_MISMATCH": "该退款单号此前以不同金额申请过退款，请核对金额或使用新的退款单号",
    "INVALID_REQUEST": "微信支付认为退款请求无效",
    "ORDERNOTEXIST": "微信支付查无此订单或订单未支付",
}
OUTCOMES = {"SUCCESS": "succeeded", "REFUNDCLOSE": "closed", "CHANGE": "change"}
UNFINISHED = ("requested", "accepted")


class Refunds:
    async def refund(self, out_trade_no: str, amount_fen: int, refund_no: str, reason: str | None = None) -> dict:
        """Ask WeChat to refund part or all of a credited order, once per ``refund_no``; the
        refund document as it stands (``accepted`` until WeChat reports the outcome)."""
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
                    {
                        "out_trade_no": out_trade_no,
                        "refund_nos": {"$ne": refund_no},
                        "$or": [{"refund_reserved_fen": {"$exists": False}}, {"refund_reserved_fen": {"$lte": limit}}],
                    },
                    {"$inc": {"refund_reserved_fen": amount_fen}, "$push": {"refund_nos": refund_no}},
                )
                if (
                    not reserved.modified_count
                    and await self.db.payments.find_one(
                        {"out_trade_no": out_trade_no, "refund_nos": refund_no}, {"_id": 1}
                    )
                    is None
                ):
                    raise Conflict("退款总额超过订单金额", code="refund_exceeds_payment")
            now = utcnow()
            await self.db.payment_refunds.update_one(
                {"_id": refund_no},
                {
                    "$setOnInsert": {
                        "out_trade_no": out_trade_no,
                        "account_no": order["account_no"],
                        "amount_fen": amount_fen,
                        "reason": reason,
                        "state": "requested",
                        "created_at": now,
                        "next_check_at": now,
                    }
                },
                upsert=True,
            )
            refund = await self.db.payment_refunds.find_one({"_id": refund_no})
        if refund["out_trade_no"] != out_trade_no or refund["amount_fen"] != amount_fen:
            raise Conflict("退款单号已用于其他退款", code="refund_no_conflict")
        if refund["state"] == "requested":
            refund = await self._request_refund(order, refund)
        elif refund["state"] == "succeeded" and not refund.get("booked_at"):
            await self._book_refund(refund)
        return await self.db.payment_refunds.find_one({"_id": refund_no})

    async def _request_refund(self, order: dict[str, Any], refund: dict[str, Any]) -> dict[str, Any]:
        """``/secapi/pay/refund`` for a ``requested`` refund; raises for a final refusal."""
        refund_no, amount = refund["_id"], refund["amount_fen"]
        notify_url = f"{self.config.public_base.rstrip('/')}{self.pay.refund_notify_path}"
        result = None
        for attempt in range(3):
            try:
                result = await self.pay.refund(
                    order["out_trade_no"],
                    refund_no,
                    order["amount_fen"],
                    amount,
                    refund.get("reason"),
                    notify_url=notify_url,
                )
            except WeChatUnavailable:
                result = None
            except PayReturnError as exc:
                raise AppError(f"微信支付拒绝了退款请求：{exc.return_msg}", code="refund_refused", status=502) from exc
            if result is not None and result.get("err_code") not in RETRY_NOW:
                break
            await asyncio.sleep(0.5 * (attempt + 1))
        err = result.get("err_code") if result is not None else None
        if result is None or err in RETRY_NOW or err in RETRY_LATER:
            later = self.config.pay_followup_interval * (10 if err == "NOTENOUGH" else 2)
            await self.db.payment_refunds.update_one(
                {"_id": refund_no, "state": "requested"},
                {"$set": {"last_err_code": err or "unreachable", "next_check_at": utcnow() + timedelta(seconds=later)}},
            )
            if result is None or err in RETRY_NOW:
                raise WeChatUnavailable(details={"refund_no": refund_no, "hint": "run again with the same number"})
            log.warning("refund %s deferred: %s; the follow-up asks again", refund_no, err)
            return await self.db.payment_refunds.find_one({"_id": refund_no})
        if not result.ok:
            failed = await self.db.payment_refunds.update_one(
                {"_id": refund_no, "state": "requested"},
                {
                    "$set": {
                        "state": "failed",
                        "err_code": err,
                        "err_code_des": result.get("err_code_des"),
                        "next_check_at": None,
                    }
                },
            )
            if failed.modified_count:
                await self._release(refund)
            raise AppError(
                REFUSED.get(err) or f"微信支付拒绝退款：{result.get('err_code_des') or err}",
                code="refund_refused",
                status=502,
                details={"err_code": err},
            )
        await self.db.payment_refunds.update_one(
            {"_id": refund_no, "state": "requested"},
            {
                "$set": {
                    "state": "accepted",
                    "refund_id": result.get("refund_id"),
                    "accepted_at": utcnow(),
                    "next_check_at": utcnow() + timedelta(seconds=self.config.pay_followup_interval),
                }
            },
        )
        return await self.db.payment_refunds.find_one({"_id": refund_no})

    async def _release(self, refund: dict[str, Any]) -> None:
        """Give a refund's reservation back to its order (called once, by the state change)."""
        await self.db.payments.update_one(
            {"out_trade_no": refund["out_trade_no"], "refund_nos": refund["_id"]},
            {"$inc": {"refund_reserved_fen": -refund["amount_fen"]}, "$pull": {"refund_nos": refund["_id"]}},
        )

    async def refund_outcome(self, refund_no: str, status: str, fields: dict[str, Any]) -> bool:
        """WeChat's word on a refund (notification or refundquery): SUCCESS books it, REFUNDCLOSE
        gives the reservation back, CHANGE is left to the operator; ``False`` if unknown here."""
        refund = await self.db.payment_refunds.find_one({"_id": refund_no})
        if refund is None:
            return False
        state = OUTCOMES.get(status)
        if state is None:  # PROCESSING: look again later
            await self.db.payment_refunds.update_one(
                {"_id": refund_no, "state": {"$in": list(UNFINISHED)}},
                {"$set": {"next_check_at": utcnow() + timedelta(seconds=self.config.pay_followup_interval)}},
            )
            return True
        changed = await self.db.payment_refunds.update_one(
            {"_id": refund_no, "state": {"$in": list(UNFINISHED)}},
            {
                "$set": {
                    "state": state,
                    "finished_at": utcnow(),
                    "next_check_at": None,
                    "refund_id": fields.get("refund_id") or refund.get("refund_id"),
                    "success_time": fields.get("success_time") or fields.get("refund_success_time_0"),
                    "refund_recv_account": fields.get("refund_recv_accout") or fields.get("refund_recv_accout_0"),
                }
            },
        )
        if changed.modified_count:
            log.info("refund %s -> %s", refund_no, state)
            if state == "closed":
                await self._release(refund)
            elif state == "change":
                log.error(
                    "refund %s of %s ended CHANGE: the money is back at the merchant; refund it by hand "
                    "in the merchant platform",
                    refund_no,
                    refund["out_trade_no"],
                )
        refund = await self.db.payment_refunds.find_one({"_id": refund_no})
        if refund["state"] == "succeeded" and not refund.get("booked_at"):
            await self._book_refund(refund)
        return True

    async def handle_refund_notification(self, raw: bytes, headers: Any = None) -> tuple[bool, str]:
        """A refund notification (v2 XML, ``req_info`` encrypted with the API key's MD5; or v3 JSON
        with its signature ``headers``): ``(ok, message)`` for the answer. A repeat answers
        SUCCESS and changes nothing."""
        fields, refusal = read_notification(self.pay.parse_refund_notification, raw, headers, "refund")
        if fields is None:
            return False, refusal
        refund_no = fields.get("out_refund_no", "")
        refund = await self.db.payment_refunds.find_one({"_id": refund_no}) if refund_no else None
        outcome = "accepted"
        if refund is None:
            outcome = "unknown_refund"
        elif (fields.get("refund_fee"), fields.get("out_trade_no")) != (
            str(refund["amount_fen"]),
            refund["out_trade_no"],
        ):
            outcome = "amount_mismatch"
        await self.db.payment_events.insert_one(
            {
                "out_trade_no": fields.get("out_trade_no"),
                "refund_no": refund_no,
                "kind": "refund_notification",
                "outcome": outcome,
                "at": utcnow(),
                "fields": fields,
            }
        )
        if outcome != "accepted":
            log.error("refund notification for %s refused: %s", refund_no, outcome)
            return False, "退款单不存在" if refund is None else "退款金额不符"
        await self.refund_outcome(refund_no, fields.get("refund_status", ""), fields)
        return True, "OK"

    async def refunds_followup(self, limit: int = 200) -> int:
        """Refunds not finished and due a look: ask again (``requested``), query (``accepted``),
        finish booking (``succeeded`` not booked)."""
        now, count = utcnow(), 0
        due = (
            await self.db.payment_refunds.find(
                {
                    "$or": [
                        {"state": {"$in": list(UNFINISHED)}, "next_check_at": {"$lte": now}},
                        {"state": "succeeded", "booked_at": None},
                    ]
                }
            )
            .limit(limit)
            .to_list(None)
        )
        for refund in due:
            try:
                if refund["state"] == "requested":
                    order = await self.db.payments.find_one({"out_trade_no": refund["out_trade_no"]})
                    await self._request_refund(order, refund)
                elif refund["state"] == "accepted":
                    result = await self.pay.refundquery(refund["_id"])
                    if result.ok:
                        await self.refund_outcome(refund["_id"], result.get("refund_status_0", ""), result)
                    else:
                        log.warning("refundquery %s: %s", refund["_id"], result.get("err_code"))
                        await self.refund_outcome(refund["_id"], "PROCESSING", {})
                else:
                    await self._book_refund(refund)
                count += 1
            except (PyMongoError, AppError, PayReturnError) as exc:
                log.warning("follow-up refund %s: %s", refund["_id"], type(exc).__name__)
        return count

    async def _book_refund(self, refund: dict[str, Any]) -> None:
        """The money left: debit the balance, re-open bills, count it on the order (once each)."""
        order = await self.db.payments.find_one({"out_trade_no": refund["out_trade_no"]})
        otn, refund_no, account_no = order["out_trade_no"], refund["_id"], order["account_no"]
        await self.db.accounts.update_one(
            {"_id": account_no, "refunded": {"$ne": refund_no}},
            {"$inc": {"balance_fen": -refund["amount_fen"]}, "$push": {"refunded": refund_no}},
        )
        await self._reopen_bills(order, refund_no)
        await self.db.payments.update_one(
            {"out_trade_no": otn, "refunds_done": {"$ne": refund_no}},
            {
                "$inc": {"refunded_fen": refund["amount_fen"]},
                "$push": {"refunds_done": refund_no},
                "$set": {"updated_at": utcnow()},
            },
        )
        await self.db.payment_refunds.update_one(
            {"_id": refund_no, "state": "succeeded"}, {"$set": {"booked_at": utcnow()}}
        )

    async def _reopen_bills(self, order: dict[str, Any], refund_no: str) -> None:
        """Bring the bills this payment settled down to what the refunds leave of it.

        After refunds totalling R, the payment's settlements may net at most ``amount - R``;
        what they net beyond that is taken back from its bills, newest period first, each with
        a negative settlement entry. The target is recomputed from the succeeded refunds on
        every pass, and each bill write names the paid figure it was computed from, so passes
        for several refunds of one order, run together or again, take back exactly the excess.
        """
        otn, account_no = order["out_trade_no"], order["account_no"]
        for _ in range(BILL_WRITE_TRIES):
            refunds = await self.db.payment_refunds.find(
                {"out_trade_no": otn, "state": "succeeded"}, {"amount_fen": 1}
            ).to_list(None)
            refunded_total = sum(r["amount_fen"] for r in refunds)
            bills = (
                await self.db.bills.find({"account_no": account_no, "settlements.out_trade_no": otn})
                .sort("period", DESCENDING)
                .to_list(None)
            )
            settled = sum(
                s["amount_fen"]
                for b in bills
                for s in b.get("settlements", [])
                if s.get("out_trade_no") == otn and not s.get("refund_no")
            )
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
                    {
                        "$inc": {"paid_fen": -part},
                        "$set": {
                            "status": bill_status(bill["amount_fen"], paid_before - part)
                            if paid_before - part > 0
                            else "unpaid",
                            "updated_at": utcnow(),
                        },
                        "$push": {
                            "settlements": {
                                "out_trade_no": otn,
                                "refund_no": refund_no,
                                "amount_fen": -part,
                                "at": utcnow(),
                            }
                        },
                    },
                )
                if not result.modified_count:
                    break  # changed meanwhile: read again
                excess -= part
            else:
                return
            await asyncio.sleep(secrets.randbelow(20) / 1000)
        raise Conflict("账单正在变动，请用同一退款单号重试", code="payment_busy")
