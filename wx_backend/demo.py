"""Demo data for local runs: reproducible (seeded), idempotent (upserts by natural key)."""

from __future__ import annotations

import random
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from .config import Config
from .security import DataProtector
from .services.accounts import AccountService

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
    return {"accounts_created": created}
