"""Creating JSAPI payment orders while WeChat is slow: ours against a handler calling wechatpy synchronously.

    python bench/bench_orders.py [--requests 1000] [--concurrency 32] [--duration 30] [--latency-ms 300]

The sandbox answers every WeChat call ``--latency-ms`` late (``POST /sandbox/latency``).
Ours: ``POST /api/v1/payments`` by a logged-in customer for their bound account (session,
ownership, order row, ``unifiedorder`` over the asynchronous Pay gateway, status update).
Baseline: ``bench/_bare.py wechatpy``, a Tornado handler that calls
``wechatpy.pay.WeChatPay(...).order.create(...)`` synchronously against the same sandbox, with
no database and no authentication. Both get ``--concurrency`` clients sending back to back until
``--requests`` are answered or ``--duration`` seconds have passed. Prints both rows and ratios.
"""

from __future__ import annotations

import argparse
import json

from _stack import header, ratio_lines, run_load, run_repeat, running_stack, start_bare
from payments_support import customer
from tornado.httpclient import HTTPRequest


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--duration", type=float, default=30.0, help="seconds at most per target")
    parser.add_argument("--latency-ms", type=float, default=300.0, help="added to every WeChat call")
    return parser.parse_args(argv)


def set_latency(stack, ms: float) -> None:
    resp = stack.sandbox_call("POST", "/sandbox/latency", json={"ms": ms})
    assert resp.status_code == 200, resp.text


def orders_request(stack, cust: dict):
    url = stack.api_url + "/api/v1/payments"
    headers = {"Authorization": f"Bearer {cust['token']}", "Content-Type": "application/json"}
    body = json.dumps({"account_no": cust["account_no"], "amount_fen": 100})
    return lambda _n: HTTPRequest(
        url, method="POST", headers=headers, body=body, request_timeout=120, connect_timeout=120
    )


def database_alone(stack, cust: dict, load: dict):
    """The order's database work (session, user, owned account, order insert, call record, status
    update) straight to the database from this process, under the same concurrency, WeChat left out."""
    import secrets

    from pymongo import AsyncMongoClient

    from wx_backend.db import utcnow
    from wx_backend.security import token_hash

    def make_op():
        db = AsyncMongoClient(stack.mongodb_uri, tz_aware=True, maxPoolSize=load["concurrency"])[stack.db_name]

        async def op():
            session = await db.sessions.find_one({"_id": token_hash(cust["token"])})
            user = await db.users.find_one({"_id": session["user_id"]})
            await db.accounts.find_one({"_id": cust["account_no"]})
            otn = "B" + secrets.token_hex(12)
            await db.payments.insert_one(
                {
                    "out_trade_no": otn,
                    "channel": "bench",
                    "account_no": cust["account_no"],
                    "user_id": user["_id"],
                    "amount_fen": 100,
                    "status": "created",
                    "created_at": utcnow(),
                }
            )
            await db.payment_events.insert_one({"out_trade_no": otn, "kind": "call", "at": utcnow()})
            await db.payments.update_one(
                {"out_trade_no": otn, "status": {"$in": ["created"]}},
                {"$set": {"status": "pending", "updated_at": utcnow()}},
            )

        return op

    return run_repeat("database alone (6 operations)", make_op, **load)


def run(stack, args: argparse.Namespace) -> None:
    header("JSAPI orders with slow WeChat: ours vs synchronous wechatpy handler", args, "bench_orders.py")
    cust = customer(stack)
    bare = start_bare(stack, "wechatpy")
    try:
        bare_url = f"http://127.0.0.1:{bare.port}/orders"
        bare_body = json.dumps({"openid": cust["openid"]})

        def bare_req(_n):
            return HTTPRequest(bare_url, method="POST", body=bare_body, request_timeout=120, connect_timeout=120)

        warm = {"requests": 4, "concurrency": 2, "duration": 10}
        run_load("warm-up ours", orders_request(stack, cust), expect=201, **warm)
        run_load("warm-up wechatpy sync", bare_req, expect=201, **warm)
        set_latency(stack, args.latency_ms)
        print(f"sandbox latency: {args.latency_ms:.0f} ms on every WeChat call")
        load = {"requests": args.requests, "concurrency": args.concurrency, "duration": args.duration}
        ours = run_load("ours POST /api/v1/payments", orders_request(stack, cust), expect=201, **load)
        base = run_load("wechatpy sync handler", bare_req, expect=201, **load)
    finally:
        set_latency(stack, 0)
        bare.stop()
    database_alone(stack, cust, load)
    ratio_lines(ours, base, "wechatpy-sync")


def main() -> None:
    with running_stack("orders") as stack:
        run(stack, parse())


if __name__ == "__main__":
    main()
