"""A bill's figures as the marketing system and the import send them, checked: amounts in
integer fen, unit prices in integer 0.0001 yuan per kWh (``PRICE_UNIT``), readings, time-of-use
splits and residential tiers (阶梯). Every error at once (422).
"""

from __future__ import annotations

from typing import Any

from ..errors import ValidationFailed
from ..validators import MESSAGES, is_account_no, is_day, is_period

PRICE_UNIT = "0.0001元/kWh"
TOU_PERIODS = ("jian", "feng", "ping", "gu")  # 尖 峰 平 谷
PRICE_KEYS = ("flat", *TOU_PERIODS)
MAX_TIERS = 3
MAX_FEN = 10**11
MAX_KWH = 10**10
MAX_PRICE = 100_000  # 10 yuan per kWh
BILL_FIELDS = {
    "amount_fen",
    "due_date",
    "readings",
    "kwh",
    "prices",
    "tiers",
    "offline_paid_fen",
    "account_no",
    "period",
}


def _int(value: Any, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def validate_bill(account_no: Any, period: Any, fields: Any, customer_class: str | None = None) -> dict[str, Any]:
    """Check a bill's figures; every error at once (422). Returns the values to store.

    ``customer_class`` (the account's) decides whether tiers (阶梯) are allowed: residential only.
    Shared by the HTTP upsert, the import script and the demo data.
    """
    errors: list[dict[str, str]] = []

    def bad(field: str, message: str) -> None:
        errors.append({"field": field, "message": message})

    if not is_account_no(account_no):
        bad("account_no", MESSAGES["account_no"])
    if not is_period(period):
        bad("period", MESSAGES["period"])
    if not isinstance(fields, dict):
        raise ValidationFailed(details=[*errors, {"field": "body", "message": "应为 JSON 对象"}])
    for name in sorted(set(fields) - BILL_FIELDS):
        bad(name, "未知字段")
    if "account_no" in fields and fields["account_no"] != account_no:
        bad("account_no", "与地址中的户号不一致")
    if "period" in fields and fields["period"] != period:
        bad("period", "与地址中的账期不一致")
    values: dict[str, Any] = {}

    amount = fields.get("amount_fen")
    if not _int(amount, 0, MAX_FEN):
        bad("amount_fen", "应为非负整数（分）")
    else:
        values["amount_fen"] = amount
    if not is_day(fields.get("due_date")):
        bad("due_date", MESSAGES["day"])
    else:
        values["due_date"] = fields["due_date"]

    kwh = fields.get("kwh")
    total = None
    if not isinstance(kwh, dict):
        bad("kwh", "应为对象 {total, jian, feng, ping, gu}")
    else:
        for name in sorted(set(kwh) - {"total", *TOU_PERIODS}):
            bad(f"kwh.{name}", "未知字段")
        if not _int(kwh.get("total"), 0, MAX_KWH):
            bad("kwh.total", "应为非负整数（kWh）")
        else:
            total = kwh["total"]
        parts = [p for p in TOU_PERIODS if p in kwh]
        stored = {"total": total}
        if parts:
            ok = True
            for p in TOU_PERIODS:
                if not _int(kwh.get(p), 0, MAX_KWH):
                    bad(f"kwh.{p}", "分时电量应为非负整数（kWh），尖峰平谷四项须同时给出")
                    ok = False
            if ok:
                stored.update({p: kwh[p] for p in TOU_PERIODS})
                if total is not None and sum(kwh[p] for p in TOU_PERIODS) != total:
                    bad("kwh", "尖峰平谷电量之和应等于总电量")
        values["kwh"] = stored

    readings = fields.get("readings")
    if not isinstance(readings, dict):
        bad("readings", "应为对象 {previous, current, multiplier}")
    else:
        for name in sorted(set(readings) - {"previous", "current", "multiplier"}):
            bad(f"readings.{name}", "未知字段")
        prev, cur = readings.get("previous"), readings.get("current")
        mult = readings.get("multiplier", 1)
        ok = True
        for name, value in (("previous", prev), ("current", cur)):
            if not _int(value, 0, MAX_KWH):
                bad(f"readings.{name}", "表码应为非负整数")
                ok = False
        if not _int(mult, 1, 100_000):
            bad("readings.multiplier", "倍率应为正整数")
            ok = False
        if ok:
            if cur < prev:
                bad("readings.current", "本期示数不能小于上期示数")
            elif total is not None and (cur - prev) * mult != total:
                bad("readings", "（本期示数 - 上期示数）× 倍率应等于总电量")
            values["readings"] = {"previous": prev, "current": cur, "multiplier": mult}

    prices = fields.get("prices")
    if not isinstance(prices, dict) or not prices:
        bad("prices", f"应为对象 {{flat}} 或 {{jian, feng, ping, gu}}，单位 {PRICE_UNIT}")
    else:
        ok = True
        for name in sorted(prices):
            if name not in PRICE_KEYS:
                bad(f"prices.{name}", "未知字段")
                ok = False
            elif not _int(prices[name], 1, MAX_PRICE):
                bad(f"prices.{name}", f"电价应为正整数，单位 {PRICE_UNIT}")
                ok = False
        if ok:
            needed = TOU_PERIODS if isinstance(kwh, dict) and any(p in kwh for p in TOU_PERIODS) else ("flat",)
            missing = [p for p in needed if p not in prices]
            if missing:
                bad("prices", "缺少电价：" + "、".join(missing))
            values["prices"] = dict(prices)

    tiers = fields.get("tiers")
    if tiers is not None:
        if customer_class is not None and customer_class != "低压居民":
            bad("tiers", "阶梯电量只适用于低压居民")
        elif not isinstance(tiers, list) or not 1 <= len(tiers) <= MAX_TIERS:
            bad("tiers", f"应为 1 至 {MAX_TIERS} 档的列表")
        else:
            stored_tiers, ok, lower = [], True, 0
            for i, tier in enumerate(tiers):
                where = f"tiers[{i}]"
                if not isinstance(tier, dict) or set(tier) - {"tier", "upto_kwh", "kwh", "price"}:
                    bad(where, "应为对象 {tier, upto_kwh, kwh, price}")
                    ok = False
                    continue
                last = i == len(tiers) - 1
                if tier.get("tier") != i + 1:
                    bad(f"{where}.tier", f"应为 {i + 1}")
                    ok = False
                upto = tier.get("upto_kwh")
                if last and upto is not None:
                    bad(f"{where}.upto_kwh", "最后一档无上限，应为 null")
                    ok = False
                elif not last and not _int(upto, lower + 1, MAX_KWH):
                    bad(f"{where}.upto_kwh", "档位上限应为整数且逐档递增")
                    ok = False
                if not _int(tier.get("kwh"), 0, MAX_KWH):
                    bad(f"{where}.kwh", "应为非负整数（kWh）")
                    ok = False
                elif ok and upto is not None and tier["kwh"] > upto - lower:
                    bad(f"{where}.kwh", "超过该档的电量范围")
                    ok = False
                if not _int(tier.get("price"), 1, MAX_PRICE):
                    bad(f"{where}.price", f"电价应为正整数，单位 {PRICE_UNIT}")
                    ok = False
                if ok:
                    stored_tiers.append({"tier": i + 1, "upto_kwh": upto, "kwh": tier["kwh"], "price": tier["price"]})
                    lower = upto or lower
            if ok and total is not None and sum(t["kwh"] for t in stored_tiers) != total:
                bad("tiers", "各档电量之和应等于总电量")
            if ok:
                values["tiers"] = stored_tiers

    if "offline_paid_fen" in fields:
        offline = fields["offline_paid_fen"]
        if not _int(offline, 0, MAX_FEN):
            bad("offline_paid_fen", "应为非负整数（分）")
        elif isinstance(amount, int) and offline > amount:
            bad("offline_paid_fen", "不能超过账单金额")
        else:
            values["offline_paid_fen"] = offline
    if errors:
        raise ValidationFailed(details=errors)
    return values
