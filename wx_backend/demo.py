"""Demo data for local runs: reproducible (seeded), idempotent (upserts by natural key).

300 accounts, each with a meter number (``41`` + ten zeros + the account number); for each,
24 months of bills (ending last month) and daily readings of this month so far (and of last
month for the first 40); a few outages. The demo user has bound two accounts and verified the
mobile on record of two more, which are proposed to them. Figures go through the services' own
checks (``validate_bill``, ``check_entry``) and are written in bulk, only where missing, so a
second run changes nothing and keeps what a local run did (payments, bindings).
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError

from .db import files, utcnow
from .security import DataProtector
from .services.applications import status_of
from .services.bill_figures import validate_bill
from .services.billing import new_bill_doc
from .services.keys import reading_id
from .services.outages import OutageService
from .services.periods import SHANGHAI, add_months, local_today, period_days, period_of
from .services.registry import Services
from .services.usage import check_entry

DEMO_ACCOUNTS = 300
DEMO_MONTHS = 24
DAILY_HISTORY_ACCOUNTS = 40
# Henan residential tiers (kWh a month) and prices in 0.0001 yuan/kWh
TIER_LIMITS = (180, 260)
TIER_PRICES = (5600, 6100, 8600)
TOU_PRICES = {"jian": 10500, "feng": 9000, "ping": 6000, "gu": 3000}
TOU_SHARE = {"jian": 10, "feng": 30, "ping": 35, "gu": 25}  # percent
FLAT_BUSINESS = 6800
SEASON = (118, 105, 92, 85, 90, 112, 135, 140, 108, 88, 95, 115)  # percent by calendar month

SEED = 20260226
REGIONS = ["郏县城关", "郏县茨芭", "郏县薛店", "郏县长桥"]
CLASSES = ["低压居民", "低压非居民", "高压"]
SURNAMES = "王李张刘陈杨赵黄周吴"
GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平"


def demo_accounts(count: int = DEMO_ACCOUNTS) -> list[dict[str, Any]]:
    rng = random.Random(SEED)
    accounts = []
    for i in range(count):
        cls = CLASSES[i % 3]
        region = REGIONS[i % len(REGIONS)]
        name = rng.choice(SURNAMES) + rng.choice(GIVEN) + (rng.choice(GIVEN) if i % 2 else "")
        if cls != "低压居民":
            name = f"郏县{rng.choice(GIVEN)}{rng.choice(GIVEN)}实业有限公司"
        accounts.append(
            {
                "account_no": f"52639{i:05d}",
                "holder_name": name,
                "phone": _phone(i, f"182{rng.randrange(10**8):08d}"),
                "address": f"河南省平顶山市{region}{rng.randrange(1, 300)}号",
                "region": region,
                "feeder": f"{region}{rng.randrange(1, 4)}号线",
                "customer_class": cls,
                "tariff": {
                    "tou": cls != "低压居民" or i % 4 == 0,
                    "two_part": cls == "高压",
                    "max_demand": cls == "高压" and i % 2 == 0,
                },
                "capacity_kva": 8 if cls == "低压居民" else (100 if cls == "低压非居民" else 630),
                "balance_fen": 0,
                "meter_no": f"41{0:010d}52639{i:05d}",
                "billing_mode": "prepaid" if i == 0 else "postpaid",  # the demo user's first account: 费控
            }
        )
    return accounts


def _phone(i: int, drawn: str) -> str:
    """The demo user's mobile for the proposed accounts; the drawn one (drawn anyway, so every other
    account keeps its figures) for the rest."""
    return DEMO_MOBILE if f"52639{i:05d}" in DEMO_PROPOSED else drawn


def _tou_split(total: int) -> dict[str, int]:
    parts = {p: total * share // 100 for p, share in TOU_SHARE.items()}
    parts["ping"] += total - sum(parts.values())
    return parts


def demo_bill(account: dict[str, Any], period: str, start_reading: int, rng: random.Random) -> dict[str, Any]:
    """One month's bill body (as the marketing system would send it) for a demo account."""
    cls, tou = account["customer_class"], account["tariff"]["tou"]
    base = {"低压居民": 190, "低压非居民": 1800, "高压": 42000}[cls]
    total = base * SEASON[int(period[5:]) - 1] // 100 * rng.randrange(80, 121) // 100
    body: dict[str, Any] = {
        "due_date": f"{add_months(period, 1)}-20",
        "readings": {"previous": start_reading, "current": start_reading + total},
        "kwh": {"total": total},
    }
    if tou:
        parts = _tou_split(total)
        body["kwh"].update(parts)
        body["prices"] = dict(TOU_PRICES)
        amount_e4 = sum(parts[p] * TOU_PRICES[p] for p in parts)
    elif cls == "低压居民":
        t1 = min(total, TIER_LIMITS[0])
        t2 = min(max(total - TIER_LIMITS[0], 0), TIER_LIMITS[1] - TIER_LIMITS[0])
        t3 = total - t1 - t2
        body["prices"] = {"flat": TIER_PRICES[0]}
        body["tiers"] = [
            {"tier": 1, "upto_kwh": TIER_LIMITS[0], "kwh": t1, "price": TIER_PRICES[0]},
            {"tier": 2, "upto_kwh": TIER_LIMITS[1], "kwh": t2, "price": TIER_PRICES[1]},
            {"tier": 3, "upto_kwh": None, "kwh": t3, "price": TIER_PRICES[2]},
        ]
        amount_e4 = t1 * TIER_PRICES[0] + t2 * TIER_PRICES[1] + t3 * TIER_PRICES[2]
    else:
        body["prices"] = {"flat": FLAT_BUSINESS}
        amount_e4 = total * FLAT_BUSINESS
    body["amount_fen"] = (amount_e4 + 50) // 100
    return body


async def _insert_missing(coll, docs: list[dict[str, Any]]) -> int:
    """Insert what is not there yet; the unique indexes refuse the rest (FerretDB answers
    those refusals quickly, where reading the collection first would scan it)."""
    if not docs:
        return 0
    try:
        return len((await coll.insert_many(docs, ordered=False)).inserted_ids)
    except BulkWriteError as exc:
        return exc.details.get("nInserted", 0)


async def _load_bills_and_usage(db: AsyncDatabase, accounts: list[dict[str, Any]]) -> dict[str, int]:
    now = utcnow()
    today = local_today(now)
    this_period = period_of(today)
    marker = f"bills:{SEED}:{len(accounts)}:{today.isoformat()}"
    if await db.demo_state.find_one({"_id": marker}):
        return {"bills_created": 0, "readings_created": 0}  # loaded today already
    first = add_months(this_period, -DEMO_MONTHS)
    bills, days = [], []
    for account in accounts:
        no = account["account_no"]
        rng = random.Random(f"{SEED}:{no}")
        reading = rng.randrange(1000, 50000)
        for k in range(DEMO_MONTHS):
            period = add_months(first, k)
            body = demo_bill(account, period, reading, rng)
            reading = body["readings"]["current"]
            # the newest bill: a third unpaid, a few partly paid; older ones paid
            newest, roll = k == DEMO_MONTHS - 1, rng.randrange(12)
            paid = body["amount_fen"] if not newest or roll >= 5 else 0 if roll < 4 else body["amount_fen"] // 2
            values = validate_bill(no, period, body, account["customer_class"])
            bills.append({**new_bill_doc(no, period, values, paid, now), "notified": True})
        daily = max(1, demo_bill(account, this_period, 0, rng)["kwh"]["total"] // 30)
        # this month so far for everyone; last month whole for the first accounts (the daily view)
        last_days = period_days(add_months(this_period, -1)) if int(no[-5:]) < DAILY_HISTORY_ACCOUNTS else []
        this_days = [d for d in period_days(this_period) if d < today.isoformat()]
        for day in last_days + this_days:
            values, errors = check_entry({"date": day, "kwh": daily * rng.randrange(70, 131) // 100})
            assert not errors, errors
            days.append(
                {
                    "_id": reading_id(no, values["kind"], values["key"]),
                    "account_no": no,
                    **values,
                    "created_at": now,
                    "updated_at": now,
                }
            )
    summary = {
        "bills_created": await _insert_missing(db.bills, bills),
        "readings_created": await _insert_missing(db.usage, days),
    }
    await db.demo_state.update_one({"_id": marker}, {"$set": {"at": now}}, upsert=True)
    return summary


async def _load_outages(db: AsyncDatabase, service: OutageService) -> int:
    start = (utcnow().astimezone(SHANGHAI) + timedelta(days=2)).replace(hour=8, minute=0, second=0, microsecond=0)
    created = 0
    for i, region in enumerate(REGIONS):
        ref = f"DEMO-{SEED}-{i}"
        if await db.outages.count_documents({"ref_key": ref}, limit=1):
            continue
        begin = start + timedelta(days=i)
        fields = {
            "ref": ref,
            "kind": "planned",
            "start": begin.isoformat(),
            "end": (begin + timedelta(hours=9)).isoformat(),
            "reason": "线路计划检修",
            "area": f"{region}部分区域，具体以现场公告为准",
        }
        fields.update({"regions": [region]} if i % 2 == 0 else {"feeders": [f"{region}1号线"]})
        await service.publish(fields, notify=False)  # no notifications from demo data
        created += 1
    return created


async def load(services: Services, accounts: int = DEMO_ACCOUNTS) -> dict[str, int]:
    """Upsert the demo data through the services' rules; running it twice changes nothing."""
    db = services.db
    all_accounts = demo_accounts(accounts)
    # bulk, only the missing ones: what a local run changed (balances, bindings) stays
    created = await services.accounts.insert_new(
        [(a["account_no"], {k: v for k, v in a.items() if k != "account_no"}) for a in all_accounts]
    )
    summary = {"accounts_created": created}
    summary.update(await _load_bills_and_usage(db, all_accounts))
    summary["outages_created"] = await _load_outages(db, services.outages)
    summary["applications_created"] = await load_applications(services)
    summary["verified_phones_created"] = await load_verified_phone(db, services.protector)
    summary.update(await load_prepaid_and_invoice(db))
    return summary


DEMO_OPENID = "o_demo_user"  # log in as this user through the sandbox (README) to see the demo records
DEMO_MOBILE = "18200000490"  # the demo user's verified mobile, on record for the proposed accounts
DEMO_PROPOSED = ("5263900002", "5263900003")
DEMO_APPLICANT = {
    "identity": "owner",
    "id_type": "resident_id",
    "name": "王伟",
    "id_no": "41042519850307123X",
    "mobile": DEMO_MOBILE,
}
DEMO_ORG = {
    "identity": "owner",
    "id_type": "credit_code",
    "name": "郏县明超实业有限公司",
    "id_no": "91410425MA44XKQ0DY",
    "mobile": "18200000491",
}
# (app_no, service, account_no, applicant, form, stage reached along the main path)
DEMO_APPLICATIONS = [
    (
        "20260226900001",
        "tou_change",
        "5263900000",
        DEMO_APPLICANT,
        {"tou_option": "enable", "effective_month": "2026-03", "reason": "家中白天无人，申请峰谷电价"},
        "submitted",
    ),
    (
        "20260226900002",
        "capacity_increase",
        "5263900001",
        DEMO_ORG,
        {"added_capacity_kva": 50, "voltage": "380V", "reason": "新增生产设备", "expected_date": "2026-04-01"},
        "survey",
    ),
    (
        "20260226900003",
        "enterprise_new",
        None,
        DEMO_ORG,
        {
            "customer_class": "高压",
            "address": "河南省平顶山市郏县产业集聚区纬三路8号",
            "voltage": "10kV",
            "capacity_kva": 630,
            "use_category": "industry",
            "expected_date": "2026-06-01",
        },
        "contract_signing",
    ),
    (
        "20260226900004",
        "meter_test",
        "5263900000",
        DEMO_APPLICANT,
        {"reason": "fast", "preferred_date": "2026-03-02"},
        "archived",
    ),
]


async def load_applications(services: Services) -> int:
    """A demo user bound to two demo accounts, with applications in several stages.

    Numbers in the 9xxxxx range of their day, never issued by the daily sequence in a demo run;
    inserted only when absent (a local run's changes are kept). Personal data encrypted as the
    service does it.
    """
    db, catalog, service = services.db, services.catalog, services.applications
    now = utcnow()
    user = await db.users.find_one_and_update(
        {"mp_openid": DEMO_OPENID},
        {"$setOnInsert": {"created_at": now}},
        upsert=True,
        return_document=ReturnDocument.AFTER,
    )
    for account_no in ("5263900000", "5263900001"):
        bound = await db.accounts.update_one(
            {"_id": account_no, "bindings.user_id": {"$ne": user["_id"]}},
            {"$push": {"bindings": {"user_id": user["_id"], "role": "holder", "bound_at": now}}},
        )
        if bound.modified_count:
            await db.binding_quota.update_one(
                {"_id": user["_id"]}, {"$inc": {"count": 1, "rev": 1}, "$set": {"changed_at": now}}, upsert=True
            )
    created = 0
    for app_no, code, account_no, applicant, form, target in DEMO_APPLICATIONS:
        if await db.applications.count_documents({"app_no": app_no}, limit=1):
            continue
        parts, encrypted = service.encrypt_sensitive(code, {"applicant": applicant, "form": form})
        stype = catalog.get(code)
        path, stage = ["submitted"], "submitted"
        while stage != target:
            stage = stype.stage_index[stage]["next"][0]
            path.append(stage)
        history = [
            {
                "stage": s,
                "at": now,
                "operator": "customer" if s == "submitted" else "营销系统",
                "note": "" if s == "submitted" else f"{stype.stage_index[s]['name']}（演示数据）",
                "source": "customer" if s == "submitted" else "marketing",
            }
            for s in path
        ]
        await db.applications.insert_one(
            {
                "app_no": app_no,
                "service": code,
                "account_no": account_no,
                "user_id": user["_id"],
                "applicant": parts["applicant"],
                "form": parts["form"],
                "encrypted": encrypted,
                "attachments": {},
                "stage": target,
                "status": status_of(stype.stage_index[target]),
                "history": history,
                "contract_no": None,
                "idempotency_key": f"app:{app_no}",
                "created_at": now,
                "updated_at": now,
            }
        )
        created += 1
    return created


async def load_verified_phone(db: AsyncDatabase, protector: DataProtector) -> int:
    """The demo user's verified mobile, stored as ``PhoneService.verify`` stores it; kept if present."""
    user = await db.users.find_one({"mp_openid": DEMO_OPENID})
    if user is None or await db.verified_phones.count_documents({"_id": user["_id"]}, limit=1):
        return 0
    await db.verified_phones.insert_one(
        {
            "_id": user["_id"],
            "phone_enc": protector.encrypt(DEMO_MOBILE, "phone"),
            "phone_hash": protector.lookup_hash(DEMO_MOBILE, "phone"),
            "country_code": "86",
            "watermark_at": None,
            "verified_at": utcnow(),
        }
    )
    return 1


DEMO_PAYMENT = "PDEMO20260226000000000000001"
DEMO_PAID_AT = datetime(2026, 2, 26, 2, 0, tzinfo=UTC)  # a past day: no reconciliation of today sees it


async def load_prepaid_and_invoice(db: AsyncDatabase) -> dict[str, int]:
    """The demo user's prepaid account a little above its low-balance threshold (56.00 yuan
    against the default 50.00, about 8 days left), and one paid, credited payment with its
    e-invoice issued (a company title, the PDF downloadable). Inserted only when absent; no
    messages are sent."""
    now = utcnow()
    user = await db.users.find_one({"mp_openid": DEMO_OPENID})
    estimates = 0
    if not await db.balance_estimates.count_documents({"_id": "5263900000"}, limit=1):
        await db.balance_estimates.insert_one(
            {
                "_id": "5263900000",
                "balance_fen": 5600,
                "daily_fen": 700,
                "as_of": now,
                "cutoff_date": None,
                "received_at": now,
            }
        )
        estimates = 1
    invoices = 0
    if user is not None and not await db.invoices.count_documents({"_id": "FP" + DEMO_PAYMENT}, limit=1):
        from weasyprint import HTML  # only here: the demo's one PDF

        title = {
            "kind": "company",
            "name": "郏县明超实业有限公司",
            "tax_no": "91410425MA44XKQ0DY",
            "email": "caiwu@example.com",
        }
        title_doc = await db.invoice_titles.find_one_and_update(
            {"user_id": user["_id"], "name": title["name"]},
            {"$setOnInsert": {**title, "created_at": now, "updated_at": now}},
            upsert=True,
            return_document=ReturnDocument.AFTER,
        )
        await db.payments.update_one(
            {"out_trade_no": DEMO_PAYMENT},
            {
                "$setOnInsert": {
                    "channel": "jsapi",
                    "account_no": "5263900001",
                    "user_id": user["_id"],
                    "amount_fen": 20000,
                    "status": "credited",
                    "transaction_id": "4200000000DEMO",
                    "paid_at": DEMO_PAID_AT,
                    "credited_at": DEMO_PAID_AT,
                    "created_at": now,
                    "updated_at": now,
                    "demo": True,
                }
            },
            upsert=True,
        )
        pdf = HTML(
            string=(
                "<html><body style='font-family: Noto Sans CJK SC'><h1>电子发票（普通发票）</h1>"
                "<p>发票号码：26412000000000000001</p><p>购买方：郏县明超实业有限公司 91410425MA44XKQ0DY</p>"
                "<p>项目：电费（户号 5263900001）</p><p>金额：200.00 元</p><p>开票日期：2026-02-26</p>"
                "<p>（演示数据）</p></body></html>"
            )
        ).write_pdf()
        file_id = await files(db).upload_from_stream(
            "26412000000000000001.pdf",
            pdf,
            metadata={
                "purpose": "invoice",
                "invoice_id": "FP" + DEMO_PAYMENT,
                "content_type": "application/pdf",
                "size": len(pdf),
                "created_at": now,
            },
        )
        await db.invoices.insert_one(
            {
                "_id": "FP" + DEMO_PAYMENT,
                "out_trade_no": DEMO_PAYMENT,
                "account_no": "5263900001",
                "user_id": user["_id"],
                "title_id": title_doc["_id"],
                "title": title,
                "amount_fen": 20000,
                "paid_at": DEMO_PAID_AT,
                "status": "issued",
                "attempt": 1,
                "requested_at": now,
                "updated_at": now,
                "invoice_no": "26412000000000000001",
                "issued_amount_fen": 20000,
                "issued_on": "2026-02-26",
                "pdf_file_id": file_id,
                "decided_at": now,
            }
        )
        invoices = 1
    return {"estimates_created": estimates, "invoices_created": invoices}
