"""Latency of finding accounts without their number: proposals, 模糊查询 and the meter barcode.

    python bench/bench_finding.py [--accounts 10000] [--requests 50]

Loads ``--accounts`` accounts (each with a meter number; every 50th pair shares a mobile) into a
fresh database (its own FerretDB, or ``MONGODB_URI``), starts the WeChat sandbox and the app as
subprocesses, and sends ``--requests`` requests of each kind one after another, each kind from
enough users that none reaches its hourly allowance (10 searches, 10 meter lookups). Proposals
come from users whose mobile was verified through the sandbox's getPhoneNumber button. Prints
the median and p99 latency. Not a test: numbers for the report.
"""

from __future__ import annotations

import argparse
import base64
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for _path in (ROOT, ROOT / "tests", ROOT / "bench"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import asyncio  # noqa: E402

from bench_queries import bench_accounts  # noqa: E402
from conftest import TEST_DATA_KEY, Stack  # noqa: E402
from pymongo import AsyncMongoClient  # noqa: E402

from wx_backend.embedded import database_uri  # noqa: E402
from wx_backend.security import DataProtector  # noqa: E402
from wx_backend.services.account_finder import METER_HOURLY, SEARCH_HOURLY  # noqa: E402
from wx_backend.services.accounts import AccountService  # noqa: E402
from wx_backend.services.registry import ensure_indexes  # noqa: E402

CHUNK = 5000
PER_USER = min(SEARCH_HOURLY, METER_HOURLY)


def accounts(count: int) -> list[dict]:
    out = bench_accounts(count)
    for i, a in enumerate(out):
        a["meter_no"] = f"41{0:010d}{a['account_no']}"
        if i % 50 == 1:
            a["phone"] = out[i - 1]["phone"]  # a customer with two accounts
    return out


async def load(uri: str, db_name: str, items: list[dict]) -> float:
    client = AsyncMongoClient(uri, tz_aware=True)
    db = client[db_name]
    await ensure_indexes(db)
    service = AccountService(db, DataProtector(base64.b64decode(TEST_DATA_KEY)))
    t0 = time.perf_counter()
    for i in range(0, len(items), CHUNK):
        await service.insert_new(
            [(a["account_no"], {k: v for k, v in a.items() if k != "account_no"}) for a in items[i : i + CHUNK]]
        )
    await client.close()
    return time.perf_counter() - t0


def timed(stack: Stack, users: list[str], paths: list[str]) -> tuple[list[float], int]:
    latencies, errors = [], 0
    for n, path in enumerate(paths):
        t0 = time.perf_counter()
        resp = stack.api("GET", path, token=users[n // PER_USER])
        latencies.append((time.perf_counter() - t0) * 1000)
        errors += resp.status_code != 200
    return latencies, errors


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def run(args: argparse.Namespace) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="bench-finding-"))
    db_name = f"bench_{int(time.time())}"
    items = accounts(args.accounts)
    with database_uri(workdir / "ferretdb") as uri:
        seconds = asyncio.run(load(uri, db_name, items))
        print(f"loaded {args.accounts} accounts in {seconds:.1f} s")
        (workdir / "stack").mkdir()
        stack = Stack(workdir / "stack", uri, db_name=db_name).start()
        try:
            needed = -(-args.requests // PER_USER)
            users = [stack.login() for _ in range(needed)]
            shared = [items[i] for i in range(0, len(items), 50)]
            for n, token in enumerate(users):
                code = stack.sandbox_call(
                    "POST", "/sandbox/mp/phone-code", json={"phone": shared[n % len(shared)]["phone"]}
                ).json()["code"]
                assert stack.api("POST", "/api/v1/me/phone", token=token, json={"code": code}).status_code == 200
            picks = [items[(n * 7919) % len(items)] for n in range(args.requests)]
            kinds = {
                "(bound list)": ["/api/v1/accounts"] * args.requests,  # for comparison: reads only
                "proposals": ["/api/v1/accounts/proposals"] * args.requests,
                "search name": [
                    f"/api/v1/accounts/search?region={a['region']}&q={a['holder_name'][1:]}" for a in picks
                ],
                "search addr": [f"/api/v1/accounts/search?region={a['region']}&q={a['address'][-5:]}" for a in picks],
                "by meter": [f"/api/v1/accounts/by-meter/{a['meter_no']}" for a in picks],
            }
            print(f"{'lookup':<13}{'requests':>9}{'errors':>8}{'median ms':>11}{'p99 ms':>9}")
            for name, paths in kinds.items():
                # a fresh allowance per kind: search name and search addr share one
                stack.db.rate_limits.delete_many({})
                lat, errors = timed(stack, users, paths)
                print(f"{name:<13}{len(lat):>9}{errors:>8}{statistics.median(lat):>11.1f}{p99(lat):>9.1f}", flush=True)
        finally:
            stack.stop()
    backend = "MONGODB_URI" if os.environ.get("MONGODB_URI") else "embedded FerretDB (SQLite)"
    load_avg = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    print(f"database: {backend}; cores: {os.cpu_count()}; load average: {load_avg}; one app process; one client")
    print(f"reproduce: python bench/bench_finding.py --accounts {args.accounts} --requests {args.requests}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--accounts", type=int, default=10000)
    parser.add_argument("--requests", type=int, default=50)
    run(parser.parse_args())


if __name__ == "__main__":
    main()
