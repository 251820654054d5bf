"""Money and state changes whatever the timing: crediting while every step is slowed beyond any
lease the code once relied on, and conflicting transitions raced against each other."""

from __future__ import annotations

import random
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from conftest import Stack
from payments_chaos import _terminal_via
from payments_support import (
    AGO_2,
    AGO_3,
    AGO_4,
    AGO_5,
    add_bill,
    auth_code,
    customer,
    notification_xml,
    prepay_id,
    register_terminal,
    wait_for,
)

from wx_backend.embedded import free_port

# longer than the account lock's lease (15 s) and the payment-code order's (19 s here) that
# crediting used to hold: a step outliving them must still not undo another
STEP_DELAY = "20"


@pytest.fixture(scope="module")
def slow_stack(workdir, mongodb_uri):
    s = Stack(workdir / "slow-credit", mongodb_uri, extra_env={"WX_CREDIT_STEP_DELAY": STEP_DELAY})
    s.workdir.mkdir()
    s.start()
    yield s
    s.stop()


def test_fifty_credits_to_one_account_with_every_step_slowed(slow_stack):
    stack = slow_stack
    person = customer(stack, balance_fen=-1000)
    no = person["account_no"]
    for period, amount in ((AGO_5, 3100), (AGO_4, 4700), (AGO_3, 2900), (AGO_2, 5300)):
        add_bill(stack, no, period, amount)
    terminal = register_terminal(stack, "慢入账测试终端")
    port_b = free_port()
    proc_b = stack.start_app(port_b)
    bases = [stack.api_url, f"http://127.0.0.1:{port_b}"]
    rng = random.Random()
    amounts = [rng.randint(200, 900) for _ in range(50)]
    outcomes: Counter = Counter()
    made: list[str] = []
    lock = threading.Lock()

    def one(i: int) -> None:
        base = bases[i % 2]
        if i % 2 == 0:  # mini-program: the sandbox notifies, and two copies go to each process
            resp = requests.post(base + "/api/v1/payments", json={"account_no": no, "amount_fen": amounts[i]},
                                 headers={"Authorization": f"Bearer {person['token']}"}, timeout=60)
            assert resp.status_code == 201, resp.text
            created = resp.json()
            paid = stack.sandbox_call("POST", "/sandbox/pay/confirm", json={"prepay_id": prepay_id(created)})
            assert paid.status_code == 200, paid.text
            body = notification_xml(stack, created["out_trade_no"], amounts[i],
                                    transaction_id=paid.json()["transaction_id"])
            for target in bases + bases:
                answer = requests.post(target + "/wechat/pay/notify", data=body,
                                       headers={"Content-Type": "text/xml"}, timeout=60)
                with lock:
                    outcomes[f"notify_{answer.status_code}"] += 1
            otn = created["out_trade_no"]
        else:  # a payment code at a terminal
            resp = _terminal_via(stack, terminal, {"account_no": no, "amount_fen": amounts[i],
                                                   "auth_code": auth_code(stack, "pay"),
                                                   "terminal_trade_no": f"S{i}x{rng.randint(0, 10**9)}"}, base)
            assert resp.status_code == 200, resp.text
            assert resp.json()["status"] == "paid", resp.text
            otn = resp.json()["out_trade_no"]
        with lock:
            made.append(otn)

    try:
        with ThreadPoolExecutor(25) as pool:
            for future in [pool.submit(one, i) for i in range(50)]:
                future.result()
        wait_for(lambda: stack.db.payment_credits.count_documents(
            {"_id": {"$in": made}, "state": "done"}) == 50, timeout=600, step=1)
    finally:
        proc_b.stop()
        stack.apps = [p for p in stack.apps if p.port != port_b]

    assert outcomes == {"notify_200": 100}
    account = stack.db.accounts.find_one({"_id": no})
    assert account["balance_fen"] == -1000 + sum(amounts)
    assert sorted(account["credited"]) == sorted(made)  # each payment's marker once
    orders = {o["out_trade_no"]: o for o in stack.db.payments.find({"out_trade_no": {"$in": made}})}
    assert {o["status"] for o in orders.values()} == {"credited"}
    per_payment: Counter = Counter()
    for bill in stack.db.bills.find({"account_no": no}):
        entries = [s for s in bill["settlements"] if s.get("out_trade_no")]
        assert bill["paid_fen"] == sum(s["amount_fen"] for s in bill["settlements"]), bill
        assert bill["paid_fen"] == bill["amount_fen"] and bill["status"] == "paid", bill  # 17,000 < the payments
        otns = [s["out_trade_no"] for s in entries]
        assert len(otns) == len(set(otns)), f"a payment settled {bill['period']} twice"
        for s in entries:
            per_payment[s["out_trade_no"]] += s["amount_fen"]
    for otn, settled in per_payment.items():
        assert settled <= orders[otn]["amount_fen"]
        credit = stack.db.payment_credits.find_one({"_id": otn})
        assert sum(s["amount_fen"] for s in credit["settlements"]) == settled
    assert sum(per_payment.values()) == 3100 + 4700 + 2900 + 5300
