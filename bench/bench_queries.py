"""Latency of the query endpoints (bills, charges, usage) under concurrent clients.

    python bench/bench_queries.py [--accounts 10000] [--months 24] [--users 200] [--clients 1,16]
                                  [--requests 300] [--timeout 120]

Loads ``--accounts`` accounts with ``--months`` monthly bills each into a fresh database (its
own FerretDB, or ``MONGODB_URI``), starts the WeChat sandbox and the app as subprocesses,
logs ``--users`` users in through the sandbox and binds one account to each (written straight
into the account documents: the SMS flow would only be throttled by its own limits), then
sends ``--requests`` requests to each endpoint from ``--clients`` concurrent clients (each
number of a comma-separated list in turn)
(asyncio + tornado's AsyncHTTPClient) and prints the median and p99 latency.
Not a test: numbers for the report.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from conftest import TEST_DATA_KEY, Stack  # noqa: E402
from pymongo import AsyncMongoClient  # noqa: E402
from tornado.httpclient import AsyncHTTPClient, HTTPClientError  # noqa: E402

from wx_backend import demo  # noqa: E402
from wx_backend.db import utcnow  # noqa: E402
from wx_backend.embedded import database_uri  # noqa: E402
from wx_backend.security import DataProtector  # noqa: E402
from wx_backend.services.accounts import AccountService  # noqa: E402
from wx_backend.services.bill_figures import validate_bill  # noqa: E402
from wx_backend.services.billing import new_bill_doc  # noqa: E402
from wx_backend.services.keys import reading_id  # noqa: E402
from wx_backend.services.periods import add_months, local_today, period_days, period_of  # noqa: E402
from wx_backend.services.registry import ensure_indexes  # noqa: E402

CHUNK = 5000


def bench_accounts(count: int) -> list[dict]:
    rng = random.Random(demo.SEED)
    out = []
    for i in range(count):
        cls = demo.CLASSES[i % 3]
        region = demo.REGIONS[i % len(demo.REGIONS)]
        out.append(
            {
                "account_no": f"7{i:09d}",
                "holder_name": f"用户{i}",
                "phone": f"139{rng.randrange(10**8):08d}",
                "address": f"{region}{i}号",
                "region": region,
                "feeder": f"{region}{i % 7 + 1}号线",
                "customer_class": cls,
                "tariff": {"tou": cls != "低压居民" or i % 4 == 0, "two_part": cls == "高压", "max_demand": False},
                "capacity_kva": 8,
                "balance_fen": 0,
            }
        )
    return out


async def load(uri: str, db_name: str, count: int, months: int, bound: int) -> dict[str, float]:
    client = AsyncMongoClient(uri, tz_aware=True)
    db = client[db_name]
    await ensure_indexes(db)
    accounts = bench_accounts(count)
    service = AccountService(db, DataProtector(__import__("base64").b64decode(TEST_DATA_KEY)))
    t0 = time.perf_counter()
    for i in range(0, count, CHUNK):
        part = accounts[i : i + CHUNK]
        await service.insert_new([(a["account_no"], {k: v for k, v in a.items() if k != "account_no"}) for a in part])
    t_accounts = time.perf_counter() - t0
    now = utcnow()
    this_period = period_of(local_today(now))
    first = add_months(this_period, -months)
    t0 = time.perf_counter()
    batch: list[dict] = []
    written = 0
    for a in accounts:
        rng = random.Random(a["account_no"])
        reading = 1000
        for k in range(months):
            period = add_months(first, k)
            body = demo.demo_bill(a, period, reading, rng)
            reading = body["readings"]["current"]
            values = validate_bill(a["account_no"], period, body, a["customer_class"])
            paid = 0 if k == months - 1 else body["amount_fen"]
            batch.append({**new_bill_doc(a["account_no"], period, values, paid, now), "notified": True})
        if len(batch) >= CHUNK:
            await db.bills.insert_many(batch, ordered=False)
            written += len(batch)
            batch = []
            print(f"\rloading bills: {written}/{count * months}", end="", file=sys.stderr, flush=True)
    if batch:
        await db.bills.insert_many(batch, ordered=False)
        written += len(batch)
    print(f"\rloading bills: {written}/{count * months}", file=sys.stderr)
    t_bills = time.perf_counter() - t0
    # daily readings of this month for the accounts the benchmark users bind
    today = local_today(now).isoformat()
    days = [
        {
            "_id": reading_id(a["account_no"], "day", d),
            "account_no": a["account_no"],
            "kind": "day",
            "key": d,
            "kwh": 7,
            "created_at": now,
            "updated_at": now,
        }
        for a in accounts[:bound]
        for d in period_days(this_period)
        if d < today
    ]
    if days:
        await db.usage.insert_many(days, ordered=False)
    await client.close()
    return {"accounts_s": t_accounts, "bills_s": t_bills, "bills": written}


async def bind(stack: Stack, users: int) -> list[tuple[str, str]]:
    """Log users in over HTTP; give each one account (written directly)."""
    pairs = []
    db = stack.db
    for i in range(users):
        openid = f"o_bench_{i:06d}"
        token = stack.login(openid)
        user = db.users.find_one({"mp_openid": openid})
        account_no = f"7{i:09d}"
        db.accounts.update_one(
            {"_id": account_no},
            {"$push": {"bindings": {"user_id": user["_id"], "role": "holder", "bound_at": utcnow()}}},
        )
        pairs.append((token, account_no))
    return pairs


async def measure(
    base: str, pairs: list[tuple[str, str]], path_of, clients: int, requests: int, timeout: float
) -> tuple[list[float], int]:
    http = AsyncHTTPClient(max_clients=clients)
    latencies: list[float] = []
    errors = 0
    queue = list(range(requests))

    async def worker(seed: int) -> None:
        nonlocal errors
        rng = random.Random(seed)
        while queue:
            queue.pop()
            token, account_no = rng.choice(pairs)
            t0 = time.perf_counter()
            try:
                resp = await http.fetch(
                    base + path_of(account_no),
                    headers={"Authorization": f"Bearer {token}"},
                    request_timeout=timeout,
                    raise_error=False,
                )
                ok = resp.code == 200
            except (HTTPClientError, OSError, TimeoutError):
                ok = False
            latencies.append((time.perf_counter() - t0) * 1000)
            errors += 0 if ok else 1

    await asyncio.gather(*(worker(i) for i in range(clients)))
    return latencies, errors


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


async def run(args: argparse.Namespace) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="bench-queries-"))
    db_name = f"bench_{int(time.time())}"
    with database_uri(workdir / "ferretdb") as uri:
        loaded = await load(uri, db_name, args.accounts, args.months, args.users)
        print(
            f"loaded {args.accounts} accounts in {loaded['accounts_s']:.1f} s, {loaded['bills']} bills in "
            f"{loaded['bills_s']:.1f} s ({loaded['bills'] / loaded['bills_s']:.0f} bills/s)"
        )
        (workdir / "stack").mkdir()
        stack = Stack(workdir / "stack", uri, db_name=db_name).start()
        try:
            pairs = await bind(stack, args.users)
            this_period = period_of(local_today(utcnow()))
            year = this_period[:4]
            endpoints = {
                "bills": lambda no: f"/api/v1/accounts/{no}/bills?year={year}",
                "charges": lambda no: f"/api/v1/accounts/{no}/charges",
                "usage": lambda no: f"/api/v1/accounts/{no}/usage?from={add_months(this_period, -11)}&to={this_period}",
            }
            print(
                f"{'endpoint':<10}{'clients':>8}{'requests':>9}{'errors':>8}{'median ms':>11}{'p99 ms':>9}{'req/s':>8}"
            )
            for clients in args.clients:
                for name, path_of in endpoints.items():
                    t0 = time.perf_counter()
                    lat, errors = await measure(stack.api_url, pairs, path_of, clients, args.requests, args.timeout)
                    wall = time.perf_counter() - t0
                    print(
                        f"{name:<10}{clients:>8}{len(lat):>9}{errors:>8}{statistics.median(lat):>11.1f}"
                        f"{p99(lat):>9.1f}{len(lat) / wall:>8.1f}",
                        flush=True,
                    )
        finally:
            stack.stop()
    backend = "MONGODB_URI" if os.environ.get("MONGODB_URI") else "embedded FerretDB (SQLite)"
    print(f"database: {backend}; cores: {os.cpu_count()}; one app process")
    print(
        "reproduce: python bench/bench_queries.py "
        + " ".join(f"--{k} {','.join(map(str, v)) if isinstance(v, list) else v}" for k, v in vars(args).items())
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--accounts", type=int, default=10000)
    parser.add_argument("--months", type=int, default=24)
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument(
        "--clients",
        type=lambda v: [int(c) for c in v.split(",")],
        default=[16],
        help="concurrent clients; a comma-separated list runs each in turn, e.g. 1,16",
    )
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args()
    args.users = min(args.users, args.accounts)
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
