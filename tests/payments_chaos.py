"""Many payments under random faults, with a backend process killed mid-payment and restarted,
then the books checked to the fen against the sandbox. Used by tests and bench/prove_payments.py."""

from __future__ import annotations

import json
import random
import signal
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import requests
from pay_v3_support import Notification
from payments_support import (
    AGO_2,
    AGO_3,
    FINAL,
    add_bill,
    auth_code,
    customer,
    notification_xml,
    notify,
    prepay_id,
    register_terminal,
    replied_success,
)
from waits import port_open, wait_until

from wx_backend.embedded import free_port

JSAPI_FAULTS = [
    None,
    None,
    ("unifiedorder", "system_error"),
    ("unifiedorder", "timeout"),
    ("pay_notify", "duplicate_notify"),
    ("pay_notify", "late_notify"),
    ("pay_notify", "drop_notify"),
    ("pay_notify", "bad_signature"),
    ("orderquery", "timeout"),
    ("orderquery", "system_error"),
]
MICROPAY_FAULTS = [
    None,
    None,
    ("micropay", "system_error"),
    ("micropay", "timeout"),
    ("orderquery", "system_error"),
    ("reverse", "system_error"),
    ("micropay", "bank_error"),
]
BEHAVIOURS = ["pay", "pay", "password_then_pay", "password_timeout", "insufficient", "expired"]


def chaos(stack, n: int, seed: int = 7, customers: int = 10, workers: int = 12, kill: bool = True) -> dict:
    people = [customer(stack) for _ in range(customers)]
    for i, person in enumerate(people):
        if i % 2 == 0:
            add_bill(stack, person["account_no"], AGO_3, 3000 + i)
            add_bill(stack, person["account_no"], AGO_2, 4000 + i)
    accounts = [p["account_no"] for p in people]
    start_balance = {a: stack.db.accounts.find_one({"account_no": a})["balance_fen"] for a in accounts}
    terminal = register_terminal(stack, "压力测试终端")
    port_b = free_port()
    proc_b = {"p": stack.start_app(port_b)}
    bases = [stack.api_url, f"http://127.0.0.1:{port_b}"]
    outcomes: Counter = Counter()
    errors: list[str] = []
    lock = threading.Lock()

    def count(key: str) -> None:
        with lock:
            outcomes[key] += 1

    def call(base: str, method: str, path: str, **kw):
        return requests.request(method, base + path, timeout=40, **kw)

    def one(i: int) -> None:
        r = random.Random(seed * 100003 + i)
        person = r.choice(people)
        base = r.choice(bases)
        amount = r.randint(1, 50000)
        try:
            if r.random() < 0.6:
                fault = r.choice(JSAPI_FAULTS)
                if fault:
                    stack.fault(*fault)
                order_body = {"account_no": person["account_no"], "amount_fen": amount}
                auth = {"Authorization": f"Bearer {person['token']}"}
                try:
                    resp = call(base, "POST", "/api/v1/payments", json=order_body, headers=auth)
                except requests.ConnectionError as exc:
                    if "refused" not in str(exc):
                        raise  # the answer was lost: the order may exist, the customer gives up
                    count("jsapi_rerouted")  # as the front does when a process is down
                    resp = call(bases[1 - bases.index(base)], "POST", "/api/v1/payments", json=order_body, headers=auth)
                if resp.status_code != 201:
                    count(f"jsapi_create_{resp.status_code}")
                    return
                created = resp.json()
                if r.random() < 0.8:
                    paid = stack.sandbox_call("POST", "/sandbox/pay/confirm", json={"prepay_id": prepay_id(created)})
                    count(f"jsapi_confirm_{paid.status_code}")
                    if paid.status_code == 200 and r.random() < 0.3:  # a stray duplicate, correctly signed
                        notify(
                            stack,
                            notification_xml(
                                stack, created["out_trade_no"], amount, transaction_id=paid.json()["transaction_id"]
                            ),
                        )
                    if r.random() < 0.3:
                        call(
                            base,
                            "GET",
                            f"/api/v1/payments/{created['out_trade_no']}",
                            headers={"Authorization": f"Bearer {person['token']}"},
                        )
                else:
                    count("jsapi_abandoned")
            else:
                fault = r.choice(MICROPAY_FAULTS)
                if fault:
                    stack.fault(*fault)
                body = {
                    "account_no": person["account_no"],
                    "amount_fen": amount,
                    "auth_code": auth_code(stack, r.choice(BEHAVIOURS)),
                    "terminal_trade_no": f"C{i}x{seed}",
                }
                for attempt in range(4):  # the terminal retries with the same terminal_trade_no
                    try:
                        resp = _terminal_via(stack, terminal, body, bases[(bases.index(base) + attempt) % 2])
                        break
                    except requests.RequestException:
                        count("micropay_retried")
                        time.sleep(0.5)
                count(f"micropay_{resp.json().get('status') if resp.status_code == 200 else resp.status_code}")
        except requests.RequestException as exc:
            count(f"lost_{type(exc).__name__}")
            with lock:
                errors.append(f"{type(exc).__name__} {exc.request.url if exc.request else ''}: {str(exc)[:80]}")

    started = time.monotonic()
    with ThreadPoolExecutor(workers) as pool:
        futures = [pool.submit(one, i) for i in range(n)]
        while kill and sum(f.done() for f in futures) < n // 3:
            time.sleep(0.1)
        if kill:
            # a payment-code payment through B that is polling when B dies
            victim_body = {
                "account_no": accounts[0],
                "amount_fen": 4321,
                "auth_code": auth_code(stack, "password_then_pay"),
                "terminal_trade_no": f"V{seed}",
            }
            victim_outcome: list[str] = []

            def victim() -> None:
                try:
                    victim_outcome.append(_terminal_via(stack, terminal, victim_body, bases[1]).text)
                except requests.RequestException:
                    victim_outcome.append("lost")

            thread = threading.Thread(target=victim)
            thread.start()

            def polling() -> bool:  # B has asked WeChat about the victim's order (password_then_pay)
                order = stack.db.payments.find_one({"terminal_trade_no": victim_body["terminal_trade_no"]})
                return (
                    bool(order)
                    and stack.db.payment_events.count_documents(
                        {"out_trade_no": order["out_trade_no"], "operation": "orderquery"}
                    )
                    > 0
                )

            wait_until(polling, timeout=20)  # it is polling WeChat when the process dies
            proc_b["p"].stop(signal.SIGKILL)
            count("killed_process")
            thread.join()
            if victim_outcome == ["lost"]:
                count("victim_answer_lost")
            wait_until(lambda: not port_open(port_b))  # the port is free again
            proc_b["p"] = stack.start_app(port_b)  # restarted on the same port
            count("restarted_process")
        for f in futures:
            f.result()
    requests_done = time.monotonic() - started

    # the customers who walked away: time passes beyond their orders' expiry
    # (said again while waiting: on FerretDB a follow-up's concurrent write to the same order may
    # put back the old document, expiry included)
    def walk_away() -> None:
        past = datetime.now(UTC) - timedelta(seconds=1)
        stack.db.payments.update_many(
            {"channel": "jsapi", "status": {"$in": ["created", "pending"]}, "expires_at": {"$gt": past}},
            {"$set": {"expires_at": past, "next_check_at": past}},
        )

    walk_away()
    deadline = time.monotonic() + 150
    while stack.db.payments.count_documents({"status": {"$nin": list(FINAL)}}) and time.monotonic() < deadline:
        time.sleep(0.5)
        walk_away()
    # every announcement queued too, if the outbox is there
    settled = time.monotonic() - started
    proc_b["p"].stop()
    stack.apps = [p for p in stack.apps if p.port != port_b]
    return verify(stack, accounts, start_balance) | {
        "requests_s": round(requests_done, 1),
        "settled_s": round(settled, 1),
        "client_outcomes": dict(sorted(outcomes.items())),
        "client_errors": errors[:5],
    }


def _terminal_via(stack, terminal, body, base):
    """The terminal's signed request, sent to the backend at ``base``."""
    raw = json.dumps(body, ensure_ascii=False).encode()
    path = "/api/v1/terminal/payments"
    headers = stack.signed_headers("POST", path, raw, secret=terminal[1])
    headers.update({"X-Terminal-Id": terminal[0], "Content-Type": "application/json"})
    return requests.post(base + path, data=raw, headers=headers, timeout=40)


def verify(stack, accounts: list[str], start_balance: dict[str, int]) -> dict:
    """The books: every order final; each credited order credited exactly once; sums to the fen."""
    orders = list(stack.db.payments.find({"account_no": {"$in": accounts}}))
    by_status = Counter(o["status"] for o in orders)
    credits = {c["_id"]: c for c in stack.db.payment_credits.find({"account_no": {"$in": accounts}})}
    credited = {o["out_trade_no"] for o in orders if o["status"] == "credited"}
    markers = Counter()
    balance_gain = 0
    for a in accounts:
        doc = stack.db.accounts.find_one({"account_no": a})
        markers.update(doc.get("credited", []))
        balance_gain += doc["balance_fen"] - start_balance[a]
    summary = stack.sandbox_call("GET", "/sandbox/pay/summary").json()
    sandbox_orders = {o["out_trade_no"]: o for o in stack.sandbox_call("GET", "/sandbox/pay/orders").json()["orders"]}
    paid_at_wechat = {k for k, o in sandbox_orders.items() if o["state"] == "SUCCESS"}
    mismatched = sorted(credited ^ paid_at_wechat)
    bills_paid = sum(
        s["amount_fen"]
        for b in stack.db.bills.find({"account_no": {"$in": accounts}})
        for s in b.get("settlements", [])
    )
    stuck = [
        {k: o.get(k) for k in ("out_trade_no", "channel", "status", "created_at", "expires_at", "next_check_at")}
        | {
            "calls": [
                (e["operation"], e["outcome"])
                for e in stack.db.payment_events.find({"out_trade_no": o["out_trade_no"], "kind": "call"})
            ]
        }
        for o in orders
        if o["status"] not in FINAL
    ]
    return {
        "orders": len(orders),
        "by_status": dict(sorted(by_status.items())),
        "stuck": stuck,
        "not_final": sum(v for k, v in by_status.items() if k not in FINAL),
        "credits": len(credits),
        "credit_fen": sum(c["amount_fen"] for c in credits.values()),
        "credited_orders": len(credited),
        "credited_fen": sum(o["amount_fen"] for o in orders if o["status"] == "credited"),
        "markers_more_than_once": sum(1 for v in markers.values() if v > 1),
        "markers_missing": len(credited - set(markers)),
        "credits_without_credited_order": len(set(credits) - credited),
        "balance_gain_fen": balance_gain,
        "bills_settled_fen": bills_paid,
        "sandbox_paid_count": summary["count"],
        "sandbox_paid_fen": summary["total_fee"],
        "sandbox_by_state": summary["by_state"],
        "credited_vs_sandbox_paid_mismatch": mismatched,
    }


def duplicate_storm(stack, orders: int = 100, copies: int = 10, customers: int = 10, threads: int = 50) -> dict:
    """``orders`` unpaid orders, then ``copies`` correctly signed notifications of each, all at once."""
    people = [customer(stack) for _ in range(customers)]
    made = []
    for i in range(orders):
        person = people[i % customers]
        amount = 100 + i
        resp = stack.api(
            "POST",
            "/api/v1/payments",
            token=person["token"],
            json={"account_no": person["account_no"], "amount_fen": amount},
        )
        assert resp.status_code == 201, resp.text
        made.append((resp.json()["out_trade_no"], amount, person["account_no"]))
    bodies = []
    for otn, amount, _ in made:
        txn = "4200" + otn[-24:].rjust(24, "0")
        bodies += [notification_xml(stack, otn, amount, transaction_id=txn) for _ in range(copies)]
    random.Random(3).shuffle(bodies)
    session_local = threading.local()

    def send(body: bytes) -> bool:
        session = getattr(session_local, "s", None) or requests.Session()
        session_local.s = session
        if isinstance(body, Notification):  # v3: its own URL, signed headers
            resp = session.post(
                stack.api_url + "/wechat/pay/notify/v3", data=bytes(body), headers=body.headers, timeout=60
            )
        else:
            resp = session.post(
                stack.api_url + "/wechat/pay/notify", data=body, headers={"Content-Type": "text/xml"}, timeout=60
            )
        return replied_success(resp)

    started = time.monotonic()
    with ThreadPoolExecutor(threads) as pool:
        answers = list(pool.map(send, bodies))
    elapsed = time.monotonic() - started
    otns = [m[0] for m in made]
    deadline = time.monotonic() + 30
    while (
        stack.db.payments.count_documents({"out_trade_no": {"$in": otns}, "status": "credited"}) < orders
        and time.monotonic() < deadline
    ):
        time.sleep(0.2)
    accounts = sorted({m[2] for m in made})
    markers = Counter()
    balances = 0
    for a in accounts:
        doc = stack.db.accounts.find_one({"account_no": a})
        markers.update(doc.get("credited", []))
        balances += doc["balance_fen"]
    return {
        "notifications": len(bodies),
        "answered_success": sum(answers),
        "seconds": round(elapsed, 1),
        "credits": stack.db.payment_credits.count_documents({"_id": {"$in": otns}}),
        "credited_orders": stack.db.payments.count_documents({"out_trade_no": {"$in": otns}, "status": "credited"}),
        "markers": sum(markers[o] for o in otns),
        "markers_more_than_once": sum(1 for o in otns if markers[o] > 1),
        "balance_fen": balances,
        "expected_fen": sum(m[1] for m in made),
        "notifications_recorded": stack.db.payment_events.count_documents(
            {"out_trade_no": {"$in": otns}, "kind": "notification"}
        ),
    }
