"""Demo data for local runs: reproducible (seeded), idempotent (upserts by natural key)."""

from __future__ import annotations

import random
from typing import Any

from pymongo import ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase

from .config import Config
from .db import utcnow
from .security import DataProtector
from .services.accounts import AccountService
from .services.applications import ApplicationService, status_of
from .services.catalog import default_dirs, load_catalog

SEED = 20260226
REGIONS = ["郏县城关", "郏县茨芭", "郏县薛店", "郏县长桥"]
CLASSES = ["低压居民", "低压非居民", "高压"]
SURNAMES = "王李张刘陈杨赵黄周吴"
GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平"


def demo_accounts(count: int = 20) -> list[dict[str, Any]]:
    rng = random.Random(SEED)
    accounts = []
    for i in range(count):
        cls = CLASSES[i % 3]
        region = REGIONS[i % len(REGIONS)]
        name = rng.choice(SURNAMES) + rng.choice(GIVEN) + (rng.choice(GIVEN) if i % 2 else "")
        if cls != "低压居民":
            name = f"郏县{rng.choice(GIVEN)}{rng.choice(GIVEN)}实业有限公司"
        accounts.append({
            "account_no": f"52639{i:05d}",
            "holder_name": name,
            "phone": f"182{rng.randrange(10**8):08d}",
            "address": f"河南省平顶山市{region}{rng.randrange(1, 300)}号",
            "region": region,
            "feeder": f"{region}{rng.randrange(1, 4)}号线",
            "customer_class": cls,
            "tariff": {"tou": cls != "低压居民" or i % 4 == 0, "two_part": cls == "高压",
                       "max_demand": cls == "高压" and i % 2 == 0},
            "capacity_kva": 8 if cls == "低压居民" else (100 if cls == "低压非居民" else 630),
            "balance_fen": 0,
        })
    return accounts


async def load(db: AsyncDatabase, config: Config) -> dict[str, int]:
    """Upsert the demo data through the account service; running it twice changes nothing."""
    accounts = AccountService(db, DataProtector(config.data_key_bytes))
    created = 0
    for account in demo_accounts():
        account_no = account.pop("account_no")
        if await db.accounts.count_documents({"account_no": account_no}, limit=1):
            continue  # keep what a local run changed (balances, bindings)
        _, was_created = await accounts.upsert(account_no, account)
        created += int(was_created)
    applications = await load_applications(db, config)
    return {"accounts_created": created, "applications_created": applications}


DEMO_OPENID = "o_demo_user"  # log in as this user through the sandbox (README) to see the demo records
DEMO_APPLICANT = {"identity": "owner", "id_type": "resident_id", "name": "王伟", "id_no": "41042519850307123X",
                  "mobile": "18200000490"}
DEMO_ORG = {"identity": "owner", "id_type": "credit_code", "name": "郏县明超实业有限公司",
            "id_no": "91410425MA44XKQ0DY", "mobile": "18200000491"}
# (app_no, service, account_no, applicant, form, stage reached along the main path)
DEMO_APPLICATIONS = [
    ("20260226900001", "tou_change", "5263900000", DEMO_APPLICANT,
     {"tou_option": "enable", "effective_month": "2026-03", "reason": "家中白天无人，申请峰谷电价"}, "submitted"),
    ("20260226900002", "capacity_increase", "5263900001", DEMO_ORG,
     {"added_capacity_kva": 50, "voltage": "380V", "reason": "新增生产设备", "expected_date": "2026-04-01"}, "survey"),
    ("20260226900003", "enterprise_new", None, DEMO_ORG,
     {"customer_class": "高压", "address": "河南省平顶山市郏县产业集聚区纬三路8号", "voltage": "10kV",
      "capacity_kva": 630, "use_category": "industry", "expected_date": "2026-06-01"}, "contract_signing"),
    ("20260226900004", "meter_test", "5263900000", DEMO_APPLICANT,
     {"reason": "fast", "preferred_date": "2026-03-02"}, "archived"),
]


async def load_applications(db: AsyncDatabase, config: Config) -> int:
    """A demo user bound to two demo accounts, with applications in several stages.

    Numbers in the 9xxxxx range of their day, never issued by the daily sequence in a demo run;
    inserted only when absent (a local run's changes are kept). Personal data sealed as the
    service does it.
    """
    protector = DataProtector(config.data_key_bytes)
    catalog = load_catalog(*default_dirs(config.catalog_dir))
    service = ApplicationService(db, catalog, protector)
    now = utcnow()
    user = await db.users.find_one_and_update(
        {"mp_openid": DEMO_OPENID}, {"$setOnInsert": {"created_at": now}}, upsert=True,
        return_document=ReturnDocument.AFTER,
    )
    for account_no in ("5263900000", "5263900001"):
        bound = await db.accounts.update_one(
            {"account_no": account_no, "bindings.user_id": {"$ne": user["_id"]}},
            {"$push": {"bindings": {"user_id": user["_id"], "role": "holder", "bound_at": now}}},
        )
        if bound.modified_count:
            await db.binding_quota.update_one({"_id": user["_id"]},
                                              {"$inc": {"count": 1, "rev": 1}, "$set": {"changed_at": now}},
                                              upsert=True)
    created = 0
    for app_no, code, account_no, applicant, form, target in DEMO_APPLICATIONS:
        if await db.applications.count_documents({"app_no": app_no}, limit=1):
            continue
        parts, sealed = service.seal(code, {"applicant": applicant, "form": form})
        stype = catalog.get(code)
        path, stage = ["submitted"], "submitted"
        while stage != target:
            stage = stype.stage_index[stage]["next"][0]
            path.append(stage)
        history = [{"stage": s, "at": now, "operator": "customer" if s == "submitted" else "营销系统",
                    "note": "" if s == "submitted" else f"{stype.stage_index[s]['name']}（演示数据）",
                    "source": "customer" if s == "submitted" else "marketing"} for s in path]
        await db.applications.insert_one({
            "app_no": app_no, "service": code, "account_no": account_no, "user_id": user["_id"],
            "applicant": parts["applicant"], "form": parts["form"], "sealed": sealed, "attachments": {},
            "stage": target, "status": status_of(stype.stage_index[target]), "history": history,
            "contract_no": None, "idempotency_key": f"app:{app_no}", "created_at": now, "updated_at": now,
        })
        created += 1
    return created
