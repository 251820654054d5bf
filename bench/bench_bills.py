"""The bills list end to end against a bare Tornado JSON handler, under the same concurrent load.

    python bench/bench_bills.py [--requests 3000] [--concurrency 32] [--duration 60] [--bills 24]

Ours: ``GET /api/v1/accounts/{no}/bills`` by a logged-in customer whose bound account has
``--bills`` bills (session lookup, ownership check, the bills query, serialization), through
the real backend process on its database. Bare: ``bench/_bare.py json``, a Tornado process
whose handler answers the very same JSON document (serialized per request) and nothing else.
Both get ``--concurrency`` clients sending back to back until ``--requests`` are answered or
``--duration`` seconds have passed. Prints both rows and ours/bare ratios.
"""

from __future__ import annotations

import argparse

from _stack import header, ratio_lines, run_load, run_repeat, running_stack, start_bare
from query_support import add_months, bound_account, put_bill, this_period, tou_bill
from tornado.httpclient import HTTPRequest


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds at most per target")
    parser.add_argument("--bills", type=int, default=24)
    return parser.parse_args(argv)


def customer_with_bills(stack, bills: int) -> tuple[str, str]:
    """A logged-in customer and the path of their bound account's bills list."""
    token, account = bound_account(stack)
    no = account["account_no"]
    period = this_period()
    for i in range(bills):
        period = add_months(period, -1)
        put_bill(stack, no, period, tou_bill(10 + i, 40 + i, 60 + 2 * i, 90 + 3 * i, due=f"{period}-25"))
    return token, f"/api/v1/accounts/{no}/bills"


def bills_request(stack, token: str, path: str):
    url = stack.api_url + path
    headers = {"Authorization": f"Bearer {token}"}
    return lambda _n: HTTPRequest(url, headers=headers, request_timeout=60, connect_timeout=60)


def database_alone(stack, token: str, path: str, load: dict):
    """The request's reads (session, user, owned account, the bills of 36 months in one indexed query) straight
    to the database from this process, under the same concurrency: how much of ours is the database."""
    from pymongo import AsyncMongoClient

    from wx_backend.security import token_hash
    from wx_backend.services.billing import HISTORY_MONTHS
    from wx_backend.services.keys import read_bills

    account_no = path.split("/")[4]

    def make_op():
        db = AsyncMongoClient(stack.mongodb_uri, tz_aware=True, maxPoolSize=load["concurrency"])[stack.db_name]

        async def op():
            session = await db.sessions.find_one({"_id": token_hash(token)})
            await db.users.find_one({"_id": session["user_id"]})
            await db.accounts.find_one({"_id": account_no})
            last = this_period()
            return await read_bills(db, account_no, add_months(last, 1 - HISTORY_MONTHS), last)

        return op

    return run_repeat(f"database alone (3 reads + {HISTORY_MONTHS} months of bills in one query)", make_op, **load)


def round_trips(stack, token: str, path: str) -> int:
    """Database commands one bills request sends: the handler's own service calls (authenticate,
    then ``BillService.list_for``) on a client that counts every command it starts."""
    import asyncio
    import base64

    from pymongo import AsyncMongoClient, monitoring

    from wx_backend.security import DataProtector
    from wx_backend.services.accounts import AccountService
    from wx_backend.services.billing import BillService
    from wx_backend.services.users import UserService

    commands: list[str] = []

    class Count(monitoring.CommandListener):
        def started(self, event):
            commands.append(event.command_name)

        def succeeded(self, event):
            pass

        def failed(self, event):
            pass

    async def once() -> list[str]:
        client = AsyncMongoClient(stack.mongodb_uri, tz_aware=True, event_listeners=[Count()])
        try:
            db = client[stack.db_name]
            protector = DataProtector(base64.b64decode(stack.env["WX_DATA_KEY"]))
            accounts = AccountService(db, protector)
            await db.command("ping")
            commands.clear()
            user = await UserService(db, None, 0).authenticate(token)
            await BillService(db, accounts, None).list_for(user, path.split("/")[4])  # reads only: nothing to notify
            return list(commands)
        finally:
            await client.close()

    sent = asyncio.run(once())
    print(f"round trips per bills request: {len(sent)} ({', '.join(sent)})")
    return len(sent)


def run(stack, args: argparse.Namespace) -> None:
    header("bills list: ours vs bare Tornado JSON handler", args, "bench_bills.py")
    token, path = customer_with_bills(stack, args.bills)
    resp = stack.api("GET", path, token=token)
    assert resp.status_code == 200 and len(resp.json()["bills"]) == args.bills, resp.text
    body_file = stack.workdir / f"bills-{path.split('/')[4]}.json"
    body_file.write_bytes(resp.content)
    bare = start_bare(stack, "json", str(body_file))
    try:
        bare_url = f"http://127.0.0.1:{bare.port}/bills"
        bare_req = lambda _n: HTTPRequest(bare_url, request_timeout=60, connect_timeout=60)  # noqa: E731
        print(f"response body: {len(resp.content)} bytes ({args.bills} bills), same document from both")
        round_trips(stack, token, path)
        load = {"requests": args.requests, "concurrency": args.concurrency, "duration": args.duration}
        warm = {"requests": min(100, args.requests), "concurrency": args.concurrency, "duration": 10}
        run_load("warm-up ours", bills_request(stack, token, path), **warm)
        run_load("warm-up bare", bare_req, **warm)
        ours = run_load("ours GET .../bills", bills_request(stack, token, path), **load)
        base = run_load("bare Tornado JSON", bare_req, **load)
        database_alone(stack, token, path, load)
    finally:
        bare.stop()
    ratio_lines(ours, base, "bare")


def main() -> None:
    with running_stack("bills") as stack:
        run(stack, parse())


if __name__ == "__main__":
    main()
