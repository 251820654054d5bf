"""Meter readings (daily and monthly kWh) and the usage analysis (用能分析).

Readings come from the marketing system (``PUT /internal/v1/accounts/{no}/usage``) and from
``scripts/import_usage.py``; both go through ``UsageService.put``. One document per
(account, kind, key) in ``usage``: kind ``day`` (key ``YYYY-MM-DD``) or ``month`` (key
``YYYY-MM``), ``kwh`` (integer) and optionally the time-of-use split ``tou``, stored under
``{account_no}:{kind}:{key}``; an account's days or months are read in one indexed query
(services/keys.py).

The analysis is monthly: a month's kWh and amount come from its bill; a month without a bill
but with a monthly reading shows that reading's kWh (amount null); a month with neither is
null, and every change against a null month is null. Changes are integer per-mille.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pymongo import ASCENDING, IndexModel, UpdateOne
from pymongo.asynchronous.database import AsyncDatabase

from ..db import utcnow
from ..errors import NotFound, ValidationFailed
from ..validators import MESSAGES, field_error, is_account_no, is_day, is_period
from .accounts import AccountService
from .bill_figures import MAX_KWH, TOU_PERIODS
from .keys import read_bills, read_readings, reading_id
from .periods import (
    add_months,
    local_today,
    months_between,
    period_days,
    period_of,
    permille_change,
    ratio_round,
)

INDEXES = {
    "usage": [IndexModel([("account_no", ASCENDING), ("kind", ASCENDING), ("key", ASCENDING)], unique=True)],
}

MAX_ENTRIES = 1000
MAX_MONTHS = 36
MAX_DAY_KWH = 10**8


def _int(value: Any, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= high


def check_entry(entry: Any, where: str = "entry") -> tuple[dict[str, Any] | None, list[dict[str, str]]]:
    """One reading: ``{"date": "YYYY-MM-DD" | "month": "YYYY-MM", "kwh": int, "tou"?: {jian, feng, ping, gu}}``.

    Returns ``(values, [])`` or ``(None, errors)``; used for each entry of a batch and for each
    row of an import file.
    """
    errors: list[dict[str, str]] = []
    if not isinstance(entry, dict):
        return None, [{"field": where, "message": "应为对象 {date 或 month, kwh, tou}"}]
    for name in sorted(set(entry) - {"date", "month", "kwh", "tou", "account_no"}):
        errors.append({"field": f"{where}.{name}", "message": "未知字段"})
    values: dict[str, Any] = {}
    if ("date" in entry) == ("month" in entry):
        errors.append({"field": where, "message": "date（日电量）与 month（月电量）须且只须给出一个"})
    elif "date" in entry:
        if not is_day(entry["date"]):
            errors.append(field_error(f"{where}.date", "day"))
        values.update(kind="day", key=entry["date"])
    else:
        if not is_period(entry["month"]):
            errors.append(field_error(f"{where}.month", "period"))
        values.update(kind="month", key=entry["month"])
    high = MAX_DAY_KWH if values.get("kind") == "day" else MAX_KWH
    kwh = entry.get("kwh")
    if not _int(kwh, high):
        errors.append({"field": f"{where}.kwh", "message": "电量应为非负整数（kWh）"})
    values["kwh"] = kwh
    tou = entry.get("tou")
    if tou is not None:
        if not isinstance(tou, dict) or set(tou) != set(TOU_PERIODS) or not all(_int(tou[p], high) for p in tou):
            errors.append({"field": f"{where}.tou", "message": "分时电量应为 {jian, feng, ping, gu} 四项非负整数"})
        elif _int(kwh, high) and sum(tou.values()) != kwh:
            errors.append({"field": f"{where}.tou", "message": "尖峰平谷电量之和应等于电量"})
        else:
            values["tou"] = {p: tou[p] for p in TOU_PERIODS}
    return (None, errors) if errors else (values, [])


class UsageService:
    def __init__(self, db: AsyncDatabase, accounts: AccountService):
        self.db = db
        self.accounts = accounts

    # -- readings in ----------------------------------------------------------------------
    async def put(self, account_no: str, entries: Any) -> dict[str, int]:
        """Upsert a batch of readings of one account, all or nothing (422 lists every bad entry).

        Returns ``{"received", "created", "updated"}``; a reading sent again replaces the old one.
        """
        if not isinstance(entries, list) or not 1 <= len(entries) <= MAX_ENTRIES:
            raise ValidationFailed(details=[{"field": "entries", "message": f"应为 1 至 {MAX_ENTRIES} 条读数的列表"}])
        checked, errors = [], []
        for i, entry in enumerate(entries):
            values, problems = check_entry(entry, f"entries[{i}]")
            errors.extend(problems)
            if values:
                checked.append(values)
        keys = [(v["kind"], v["key"]) for v in checked]
        if len(set(keys)) != len(keys):
            errors.append({"field": "entries", "message": "同一日期或月份出现多次"})
        if errors:
            raise ValidationFailed(details=errors)
        if not is_account_no(account_no) or await self.db.accounts.find_one({"_id": account_no}, {"_id": 1}) is None:
            raise NotFound("未找到该户号，请核对后重新输入", code="account_not_found")
        now = utcnow()
        ops = []
        for v in checked:
            doc = {"kwh": v["kwh"], "updated_at": now}
            update: dict[str, Any] = {
                "$set": doc,
                "$setOnInsert": {"account_no": account_no, "kind": v["kind"], "key": v["key"], "created_at": now},
            }
            if "tou" in v:
                doc["tou"] = v["tou"]
            else:
                update["$unset"] = {"tou": ""}
            ops.append(UpdateOne({"_id": reading_id(account_no, v["kind"], v["key"])}, update, upsert=True))
        result = await self.db.usage.bulk_write(ops, ordered=False)
        return {"received": len(ops), "created": result.upserted_count, "updated": len(ops) - result.upserted_count}

    # -- analysis ----------------------------------------------------------------------------
    async def monthly(
        self, user: dict[str, Any], account_no: str, first: Any = None, last: Any = None, now: datetime | None = None
    ) -> dict[str, Any]:
        """Monthly kWh and amount from ``first`` to ``last`` (``YYYY-MM``, at most 36 months).

        Defaults: the 12 months ending with the current one (Asia/Shanghai).
        """
        await self.accounts.get_owned(user, account_no)
        this_period = period_of(local_today(now or utcnow()))
        last = last or this_period
        first = first or (add_months(last, -11) if is_period(last) else None)
        errors = []
        if not is_period(first):
            errors.append({"field": "from", "message": "起始" + MESSAGES["period"]})
        if not is_period(last):
            errors.append({"field": "to", "message": "结束" + MESSAGES["period"]})
        if not errors:
            span = months_between(first, last)
            if span < 1:
                errors.append({"field": "from", "message": "起始月份不能晚于结束月份"})
            elif span > MAX_MONTHS:
                errors.append({"field": "to", "message": f"一次最多查询 {MAX_MONTHS} 个月"})
        if errors:
            raise ValidationFailed(details=errors)

        # the bills and monthly readings of the range and of the year before, each by its _id
        start = add_months(first, -12)
        by_bill = await read_bills(self.db, account_no, start, last, {"period": 1, "kwh": 1, "amount_fen": 1})
        periods = [add_months(start, k) for k in range(months_between(start, last))]
        by_reading = await read_readings(self.db, account_no, "month", periods, {"key": 1, "kwh": 1, "tou": 1})

        def figures(period: str) -> tuple[int | None, int | None, dict[str, int] | None, str | None]:
            bill = by_bill.get(period)
            if bill is not None:
                tou = {p: bill["kwh"][p] for p in TOU_PERIODS if p in bill["kwh"]} or None
                return bill["kwh"]["total"], bill["amount_fen"], tou, "bill"
            reading = by_reading.get(period)
            if reading is not None:
                return reading["kwh"], None, reading.get("tou"), "reading"
            return None, None, None, None

        months = []
        period = first
        while period <= last:
            kwh, amount, tou, source = figures(period)
            prev_kwh, prev_amount, _, _ = figures(add_months(period, -1))
            ly_kwh, ly_amount, _, _ = figures(add_months(period, -12))
            months.append(
                {
                    "period": period,
                    "kwh": kwh,
                    "amount_fen": amount,
                    "source": source,
                    "kwh_by_period": tou,
                    "avg_price": ratio_round(amount * 100, kwh) if amount is not None and kwh else None,
                    "kwh_mom_permille": permille_change(kwh, prev_kwh),
                    "kwh_yoy_permille": permille_change(kwh, ly_kwh),
                    "amount_mom_permille": permille_change(amount, prev_amount),
                    "amount_yoy_permille": permille_change(amount, ly_amount),
                }
            )
            period = add_months(period, 1)

        # range totals from the same documents (one read per collection; see docs/queries.md)
        billed_docs = [by_bill[m["period"]] for m in months if m["source"] == "bill"]
        billed = {
            "kwh": sum(b["kwh"]["total"] for b in billed_docs),
            "amount": sum(b["amount_fen"] for b in billed_docs),
            "count": len(billed_docs),
        }
        tou_sums = {p: 0 for p in TOU_PERIODS}
        reading_only = [m for m in months if m["source"] == "reading"]
        kwh_total = billed["kwh"] + sum(m["kwh"] for m in reading_only)
        for m in months:
            for p in TOU_PERIODS:
                tou_sums[p] += (m["kwh_by_period"] or {}).get(p, 0)
        tou_total = sum(tou_sums.values())
        return {
            "account_no": account_no,
            "granularity": "month",
            "from": first,
            "to": last,
            "months": months,
            "totals": {
                "kwh": kwh_total if billed["count"] or reading_only else None,
                "amount_fen": billed["amount"] if billed["count"] else None,
                "billed_months": billed["count"],
                "months_without_data": sum(1 for m in months if m["source"] is None),
                "avg_price": ratio_round(billed["amount"] * 100, billed["kwh"]) if billed["count"] else None,
                "price_unit": "0.0001元/kWh",
                "kwh_by_period": tou_sums if tou_total else None,
                "share_permille": {p: ratio_round(tou_sums[p] * 1000, tou_total) for p in TOU_PERIODS}
                if tou_total
                else None,
            },
        }

    async def daily(self, user: dict[str, Any], account_no: str, month: Any) -> dict[str, Any]:
        """Daily kWh of one month: every calendar day, null where no reading arrived."""
        await self.accounts.get_owned(user, account_no)
        if not is_period(month):
            raise ValidationFailed(details=[field_error("month", "period")])
        days = period_days(month)
        by_day = await read_readings(self.db, account_no, "day", days, {"key": 1, "kwh": 1, "tou": 1})
        docs = list(by_day.values())
        rows = [
            {
                "date": day,
                "kwh": by_day[day]["kwh"] if day in by_day else None,
                "kwh_by_period": by_day[day].get("tou") if day in by_day else None,
            }
            for day in days
        ]
        return {
            "account_no": account_no,
            "granularity": "day",
            "month": month,
            "days": rows,
            "total_kwh": sum(d["kwh"] for d in docs) if docs else None,
            "days_read": len(docs),
        }
