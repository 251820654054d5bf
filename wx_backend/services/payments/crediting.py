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
from datetime import datetime, timedelta
from typing import Any

from pymongo.errors import DuplicateKeyError, PyMongoError

from ...db import utcnow
from ...errors import AppError
from ..billing import bill_status, history_window
from ..keys import read_bills
from .common import (
    BILL_WRITE_TRIES,
    OPEN,
    SHANGHAI,
    wechat_time_to_utc,
)

log = logging.getLogger(__package__)


class Crediting:
    """The single home of crediting a paid order exactly once (see the module's description)."""

    # -- crediting ------------------------------------------------------------------------------
    async def _mark_paid(self, order: dict[str, Any], fields: dict[str, str]) -> bool:
        """WeChat says paid: record the debt once, mark the order paid, and credit it."""
        otn = order["out_trade_no"]
        if fields.get("total_fee") != str(order["amount_fen"]):
            log.error(
                "payment %s: WeChat reports %s fen, order is %d: not credited",
                otn,
                fields.get("total_fee"),
                order["amount_fen"],
            )
            await self.db.payments.update_one({"out_trade_no": otn}, {"$set": {"anomaly": "amount_mismatch"}})
            return False
        paid_at = wechat_time_to_utc(fields.get("time_end")) or utcnow()
        transaction_id = fields.get("transaction_id")
        try:
            await self.db.payment_credits.insert_one(
                {
                    "_id": otn,
                    "account_no": order["account_no"],
                    "amount_fen": order["amount_fen"],
                    "transaction_id": transaction_id,
                    "paid_at": paid_at,
                    "state": "owed",
                    "created_at": utcnow(),
                }
            )
        except DuplicateKeyError:
            pass
        await self._set_status(
            order,
            "paid",
            (*OPEN, "closed", "failed"),
            transaction_id=transaction_id,
            paid_at=paid_at,
            next_check_at=utcnow() + timedelta(seconds=2),
        )
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
        await self._set_status(
            order, "credited", (*OPEN, "paid", "closed", "failed"), credited_at=credit.get("applied_at") or utcnow()
        )
        if credit["state"] == "applied" and await self._announce(order, credit):
            await self.db.payment_credits.update_one(
                {"_id": out_trade_no, "state": "applied"}, {"$set": {"state": "done"}}
            )
        return True

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
        await self.db.payment_credits.update_one(
            {"_id": otn, "state": "owed"},
            {
                "$set": {
                    "state": "applied",
                    "applied_at": utcnow(),
                    "settlements": settlements,
                }
            },
        )
        log.info("payment %s credited %d fen to %s", otn, amount, account_no)
        return True

    async def _settle_bills(self, account_no: str, otn: str, amount: int, at: datetime) -> list[dict[str, Any]] | None:
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
            done = [
                {"period": b["period"], "amount_fen": s["amount_fen"]}
                for b in bills
                for s in b.get("settlements", [])
                if s.get("out_trade_no") == otn and not s.get("refund_no")
            ]
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
                    {
                        "_id": bill["_id"],
                        "amount_fen": bill["amount_fen"],
                        "paid_fen": paid_before,
                        "settlements.out_trade_no": {"$ne": otn},
                    },
                    {
                        "$inc": {"paid_fen": part},
                        "$set": {"status": bill_status(bill["amount_fen"], paid_before + part), "updated_at": utcnow()},
                        "$push": {"settlements": {"out_trade_no": otn, "amount_fen": part, "at": at}},
                    },
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
                await self.notifications.notify_user(
                    user_id, "payment_received", data, page, f"payment:{otn}:{user_id}"
                )
        await self.outbox.enqueue(
            "webhook",
            f"webhook:payment.credited:{otn}",
            {
                "event": "payment.credited",
                "body": {
                    "out_trade_no": otn,
                    "transaction_id": credit.get("transaction_id"),
                    "account_no": order["account_no"],
                    "amount_fen": order["amount_fen"],
                    "channel": order["channel"],
                    "paid_at": credit["paid_at"].isoformat(),
                    "settlements": credit.get("settlements", []),
                    "terminal_id": order.get("terminal_id"),
                },
            },
        )
        return True

    # -- the follow-up --------------------------------------------------------------------------
    async def followup_once(self, limit: int = 200) -> dict[str, int]:
        """One pass over unfinished work: credits not done, orders not final and due a look, refunds
        not finished (``refunds_followup``)."""
        counts = {"credits": 0, "orders": 0, "refunds": 0}
        now = utcnow()
        credits = (
            await self.db.payment_credits.find(
                {"state": {"$in": ["owed", "applied"]}, "created_at": {"$lte": now - timedelta(seconds=1)}}
            )
            .limit(limit)
            .to_list(None)
        )
        for credit in credits:
            try:
                await self.credit(credit["_id"])
                counts["credits"] += 1
            except PyMongoError as exc:
                log.warning("follow-up credit %s: %s", credit["_id"], type(exc).__name__)
        orders = (
            await self.db.payments.find({"status": {"$in": [*OPEN, "paid"]}, "next_check_at": {"$lte": now}})
            .limit(limit)
            .to_list(None)
        )
        for order in orders:
            try:
                await self.resolve(order)
                counts["orders"] += 1
            except (PyMongoError, AppError) as exc:
                log.warning("follow-up order %s: %s", order["out_trade_no"], type(exc).__name__)
        counts["refunds"] = await self.refunds_followup(limit)
        return counts
