"""Monthly bills (电费账单) and the charges summary (电量电费).

Bills come from the marketing system (``PUT /internal/v1/accounts/{no}/bills/{period}``) and
from ``scripts/import_bills.py``; both call ``BillService.upsert``. A bill is one document per
(account, period). Money is integer fen; unit prices are integers in 0.0001 yuan per kWh
(``PRICE_UNIT``), never floats.

Two writers share a bill: this service (the figures) and the payments service (``paid_fen``,
``status``, ``settlements``). An upsert never writes ``paid_fen`` or ``settlements`` except to
add a payment the marketing system reports as made elsewhere (``offline_paid_fen``, applied as
the increase since the last report), and changes a bill only if ``paid_fen`` is still what it
read, setting ``status`` from the new amount and that ``paid_fen``. The amount of a bill may
not drop below what has been paid (409). Both writers change a bill with one conditional
update naming the figures they read (``paid_fen``, ``rev``; the payments service also
``amount_fen``): whichever comes second matches nothing, reads again and redoes its step.

Bills are stored under ``{account_no}:{period}`` (services/keys.py). The customer side reads
the last ``HISTORY_MONTHS`` months of an account (or the twelve of a given year) in one query on
the ``(account_no, period)`` index.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from pymongo import ASCENDING, IndexModel
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from ..db import utcnow
from ..errors import Conflict, NotFound, ValidationFailed
from ..validators import MESSAGES, is_account_no, is_period, is_year
from .accounts import AccountService
from .bill_figures import PRICE_UNIT, TOU_PERIODS, validate_bill
from .keys import bill_id, read_bills, read_readings
from .periods import add_months, local_today, period_days, period_of, ratio_round

log = logging.getLogger(__name__)

INDEXES = {
    "bills": [
        IndexModel([("account_no", ASCENDING), ("period", ASCENDING)], unique=True),
        IndexModel([("account_no", ASCENDING), ("status", ASCENDING)]),
    ],
}

WRITE_TRIES = 20  # re-reads of a bill that a payment settled between our read and our write
HISTORY_MONTHS = 36  # the customer side shows the bills of the last three years


def bill_status(amount_fen: int, paid_fen: int) -> str:
    """unpaid | partial | paid, from the amount and what has been paid (the payments service's rule too)."""
    if paid_fen >= amount_fen:
        return "paid"
    return "partial" if paid_fen > 0 else "unpaid"


def _account_not_found() -> NotFound:
    return NotFound("未找到该户号，请核对后重新输入", code="account_not_found")


def _bill_not_found() -> NotFound:
    return NotFound("未找到该月账单", code="bill_not_found")


class BillService:
    def __init__(self, db: AsyncDatabase, accounts: AccountService, notifications: Any):
        self.db = db
        self.accounts = accounts
        self.notifications = notifications  # Notifications (notify_user); an import may pass notify=False

    # -- from the marketing system and the import script ---------------------------------
    async def upsert(
        self, account_no: str, period: str, fields: dict[str, Any], *, notify: bool = True
    ) -> tuple[dict[str, Any], bool]:
        """Create or update the bill of ``account_no`` for ``period``: ``(bill, created)``.

        422 ``validation_failed`` for bad figures, 404 ``account_not_found``, 409
        ``bill_amount_below_paid`` when the new amount is less than what has been paid.
        Payments (``paid_fen``, ``settlements``) are never overwritten. A new unpaid bill is
        announced to the account's subscribers once (``bill_issued``), unless ``notify`` is off.
        """
        if not is_account_no(account_no):
            raise _account_not_found()
        account = await self.db.accounts.find_one({"_id": account_no}, {"customer_class": 1})
        if account is None:
            validate_bill(account_no, period, fields)  # report bad figures before "no such account"
            raise _account_not_found()
        values = validate_bill(account_no, period, fields, account.get("customer_class"))
        offline = values.pop("offline_paid_fen", None)
        bill, created = await self._write(account_no, period, values, offline)
        if notify and not bill.get("notified") and bill["status"] != "paid":
            await self._announce(bill)
        return bill, created

    async def _write(
        self, account_no: str, period: str, values: dict[str, Any], offline: int | None
    ) -> tuple[dict[str, Any], bool]:
        for _ in range(WRITE_TRIES):
            written = await self._write_once(account_no, period, values, offline)
            if written is not None:
                return written
        raise Conflict("账单正在入账，请稍后重试", code="account_busy")

    async def _write_once(
        self, account_no: str, period: str, values: dict[str, Any], offline: int | None
    ) -> tuple[dict[str, Any], bool] | None:
        """One try: ``None`` if a payment or another upsert changed the bill between our read and
        our write (the write names ``paid_fen`` and ``rev`` as read, so it then matches nothing)."""
        now = utcnow()
        key = bill_id(account_no, period)
        current = await self.db.bills.find_one({"_id": key})
        if current is None:
            doc = new_bill_doc(account_no, period, values, offline or 0, now)
            try:
                await self.db.bills.insert_one(doc)
            except DuplicateKeyError:
                return None  # created meanwhile: update it instead
            return doc, True
        paid = current.get("paid_fen", 0)
        known_offline = current.get("offline_paid_fen", 0)
        extra = 0 if offline is None else offline - known_offline
        if extra < 0:
            raise Conflict("营销系统报告的线下缴费金额不能减少", code="offline_paid_decreased")
        if values["amount_fen"] < paid + extra:
            raise Conflict(
                f"账单已缴 {paid + extra} 分，金额不能低于已缴金额",
                code="bill_amount_below_paid",
                details={"paid_fen": paid + extra},
            )
        update: dict[str, Any] = {
            "$set": {**values, "status": bill_status(values["amount_fen"], paid + extra), "updated_at": now},
            "$inc": {"rev": 1},
        }
        if extra:
            update["$inc"].update({"paid_fen": extra, "offline_paid_fen": extra})
            update["$push"] = {"settlements": _offline_settlement(extra, now)}
        unset = {name: "" for name in ("tiers",) if name not in values and name in current}
        if unset:
            update["$unset"] = unset
        result = await self.db.bills.update_one(
            {
                "_id": key,
                **{
                    name: current[name] if name in current else {"$exists": False}
                    for name in ("paid_fen", "offline_paid_fen", "rev")
                },
            },
            update,
        )
        if not result.modified_count:
            return None
        return await self.db.bills.find_one({"_id": key}), False

    async def _announce(self, bill: dict[str, Any]) -> None:
        """Tell every subscriber bound to the account that the bill is out; once per bill and user."""
        account_no, period = bill["account_no"], bill["period"]
        data = {
            "account_no": account_no,
            "period": period,
            "amount_fen": bill["amount_fen"],
            "due_date": bill["due_date"],
        }
        page = f"pages/bills/detail?account_no={account_no}&period={period}"
        for user_id in await self.accounts.user_ids_of(account_no):
            await self.notifications.notify_user(
                user_id, "bill_issued", data, page, f"bill:{account_no}:{period}:{user_id}"
            )
        await self.db.bills.update_one({"_id": bill["_id"]}, {"$set": {"notified": True}})

    # -- for the customer --------------------------------------------------------------------
    async def list_for(
        self, user: dict[str, Any], account_no: str, year: Any = None, now: datetime | None = None
    ) -> dict[str, Any]:
        """The account's bills, newest first: of one year (``YYYY``), or of the last
        ``HISTORY_MONTHS`` months."""
        await self.accounts.get_owned(user, account_no)
        if year not in (None, ""):
            if not is_year(year):
                raise ValidationFailed(details=[{"field": "year", "message": MESSAGES["year"]}])
            first, last = f"{year}-01", f"{year}-12"
        else:
            first, last = history_window(now or utcnow())
        bills = await read_bills(self.db, account_no, first, last)
        docs = [bills[p] for p in sorted(bills, reverse=True)]
        return {"account_no": account_no, "year": year or None, "bills": [summary_view(d) for d in docs]}

    async def get_for(self, user: dict[str, Any], account_no: str, period: str) -> dict[str, Any]:
        await self.accounts.get_owned(user, account_no)
        if not is_period(period):
            raise _bill_not_found()
        doc = await self.db.bills.find_one({"_id": bill_id(account_no, period)})
        if doc is None:
            raise _bill_not_found()
        return detail_view(doc)

    async def charges(self, user: dict[str, Any], account_no: str, now: datetime | None = None) -> dict[str, Any]:
        """电量电费: balance, what is owed, this month so far (estimated), last month, this year.

        Owed is the sum of the unpaid remainders (amount - paid) of the unpaid and partly paid
        bills of the last ``HISTORY_MONTHS`` months. This month so far is the kWh of this month's
        daily readings priced at the average price of the latest bill (its amount / its kWh),
        rounded half up to the fen: an estimate.
        """
        account = await self.accounts.get_owned(user, account_no)
        today = local_today(now or utcnow())
        this_period = period_of(today)
        last_period = add_months(this_period, -1)
        year = f"{today.year:04d}"
        # the bills of the last three years and this month's daily readings, one indexed query
        # each (services/keys.py), summed here
        by_period = await read_bills(
            self.db,
            account_no,
            *history_window(now or utcnow()),
            {"period": 1, "amount_fen": 1, "paid_fen": 1, "status": 1, "kwh.total": 1},
        )
        bills = list(by_period.values())
        days = list(
            (await read_readings(self.db, account_no, "day", period_days(this_period), {"key": 1, "kwh": 1})).values()
        )
        owing = [b for b in bills if b.get("status") in ("unpaid", "partial")]
        in_year = [b for b in bills if b["period"][:4] == year]
        month_kwh = sum(d["kwh"] for d in days)
        days_read = len(days)
        latest = by_period[max(by_period)] if by_period else None
        last = by_period.get(last_period)
        price = avg_price(latest) if latest else None
        estimate = None if price is None or not days_read else ratio_round(month_kwh * price, 100)
        owed = {
            "amount": sum(b["amount_fen"] for b in owing),
            "paid": sum(b.get("paid_fen", 0) for b in owing),
            "count": len(owing),
        }
        totals = {
            "kwh": sum(b["kwh"]["total"] for b in in_year),
            "amount": sum(b["amount_fen"] for b in in_year),
            "paid": sum(b.get("paid_fen", 0) for b in in_year),
            "count": len(in_year),
        }
        return {
            "account_no": account_no,
            "balance_fen": account.get("balance_fen", 0),
            "owed_fen": owed["amount"] - owed["paid"],
            "unpaid_bills": owed["count"],
            "this_month": {
                "period": this_period,
                "kwh": month_kwh if days_read else None,
                "days_read": days_read,
                "price": price,
                "price_unit": PRICE_UNIT,
                "price_from": latest["period"] if latest else None,
                "estimated_amount_fen": estimate,
                "estimated": True,
            },
            "last_month": {
                "period": last_period,
                **(
                    _month_figures(last)
                    if last
                    else {"kwh": None, "amount_fen": None, "paid_fen": None, "status": None}
                ),
            },
            "this_year": {
                "year": int(year),
                "bills": totals["count"],
                "kwh": totals["kwh"],
                "amount_fen": totals["amount"],
                "paid_fen": totals["paid"],
            },
        }


def history_window(now: datetime) -> tuple[str, str]:
    """The first and the last period of the ``HISTORY_MONTHS`` months up to ``now`` (Beijing time):
    the bills the customer is shown, owes, and pays."""
    last = period_of(local_today(now))
    return add_months(last, 1 - HISTORY_MONTHS), last


def new_bill_doc(
    account_no: str, period: str, values: dict[str, Any], offline_paid_fen: int, now: datetime
) -> dict[str, Any]:
    """A bill as first stored, from ``validate_bill``'s values (also used by the demo loader)."""
    paid = offline_paid_fen
    return {
        "_id": bill_id(account_no, period),
        "account_no": account_no,
        "period": period,
        **values,
        "paid_fen": paid,
        "offline_paid_fen": paid,
        "status": bill_status(values["amount_fen"], paid),
        "settlements": [_offline_settlement(paid, now)] if paid else [],
        "issued_at": now,
        "updated_at": now,
        "rev": 1,
        "notified": False,
    }


def _offline_settlement(amount: int, at: datetime) -> dict[str, Any]:
    return {"out_trade_no": None, "source": "marketing", "amount_fen": amount, "at": at}


def avg_price(bill: dict[str, Any]) -> int | None:
    """Average price of a bill in 0.0001 yuan per kWh (amount / kWh, rounded half up)."""
    kwh = (bill.get("kwh") or {}).get("total") or 0
    return ratio_round(bill["amount_fen"] * 100, kwh)


def _month_figures(doc: dict[str, Any]) -> dict[str, Any]:
    return {
        "kwh": doc["kwh"]["total"],
        "amount_fen": doc["amount_fen"],
        "paid_fen": doc.get("paid_fen", 0),
        "status": doc.get("status"),
    }


def summary_view(doc: dict[str, Any]) -> dict[str, Any]:
    paid = doc.get("paid_fen", 0)
    return {
        "period": doc["period"],
        **_month_figures(doc),
        "owed_fen": max(doc["amount_fen"] - paid, 0) if doc.get("status") != "paid" else 0,
        "due_date": doc["due_date"],
    }


def detail_view(doc: dict[str, Any]) -> dict[str, Any]:
    view = summary_view(doc)
    view.update(
        {
            "account_no": doc["account_no"],
            "readings": doc.get("readings"),
            "kwh_by_period": {p: doc["kwh"][p] for p in TOU_PERIODS if p in doc["kwh"]} or None,
            "tiers": doc.get("tiers"),
            "prices": doc.get("prices"),
            "price_unit": PRICE_UNIT,
            "avg_price": avg_price(doc),
            "issued_at": doc.get("issued_at"),
            "settlements": [
                {
                    "amount_fen": s.get("amount_fen"),
                    "at": s.get("at"),
                    "out_trade_no": s.get("out_trade_no"),
                    "source": s.get("source", "wechat"),
                }
                for s in doc.get("settlements", [])
            ],
        }
    )
    return view
