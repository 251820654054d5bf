"""Abuse of documented behaviour: parallel repeats of one Idempotency-Key, a key reused for
another body, a pending payment polled in a tight loop, payment codes at rest."""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor

from application_support import prepare, submit
from conftest import error_of, put_account
from payments_support import auth_code, calls, customer, pay_jsapi, register_terminal, terminal_pay


def test_parallel_repeats_of_one_idempotency_key_return_the_first_application(stack):
    token = stack.login()
    body = prepare(stack, token, "ev_charger")
    headers = {"Idempotency-Key": f"par-{uuid.uuid4().hex[:12]}"}
    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(lambda _: submit(stack, token, body, headers=dict(headers), timeout=60), range(20)))
    statuses = sorted(r.status_code for r in answers)
    assert statuses == [200] * 19 + [201], [(r.status_code, r.text[:120]) for r in answers if r.status_code >= 300]
    assert len({r.json()["app_no"] for r in answers}) == 1
    app_no = answers[0].json()["app_no"]
    assert stack.db.applications.count_documents({"app_no": app_no}) == 1


def test_an_idempotency_key_reused_for_another_body_is_refused(stack):
    token = stack.login()
    body = prepare(stack, token, "ev_charger")
    headers = {"Idempotency-Key": f"re-{uuid.uuid4().hex[:12]}"}
    first = submit(stack, token, body, headers=dict(headers))
    assert first.status_code == 201, first.text
    other = prepare(stack, token, "personal_new")
    resp = submit(stack, token, other, headers=dict(headers))
    assert resp.status_code == 422, resp.text
    assert error_of(resp)["code"] == "idempotency_key_reused"
    assert (
        stack.db.applications.count_documents(
            {"user_id": stack.db.applications.find_one({"app_no": first.json()["app_no"]})["user_id"]}
        )
        == 1
    )


def test_polling_a_pending_payment_is_throttled_per_order(stack):
    cust = customer(stack)
    otn = pay_jsapi(stack, cust, 1200)["out_trade_no"]
    started = time.monotonic()
    for _ in range(30):
        resp = stack.api("GET", f"/api/v1/payments/{otn}", token=cust["token"])
        assert resp.status_code == 200 and resp.json()["payment"]["status"] == "pending"
    elapsed = time.monotonic() - started
    queries = len(calls(stack, otn, "orderquery"))
    # one look every 2 s at most, however fast the page polls
    assert 1 <= queries <= int(elapsed / 2) + 1, f"{queries} orderquery calls for 30 GETs in {elapsed:.1f} s"


def test_payment_code_is_kept_only_as_its_last_four_digits(stack):
    terminal = register_terminal(stack)
    account = put_account(stack)
    code = auth_code(stack, "pay")
    resp = terminal_pay(stack, terminal, {"account_no": account["account_no"], "amount_fen": 100, "auth_code": code})
    assert resp.status_code == 200, resp.text
    otn = resp.json()["out_trade_no"]
    events = list(stack.db.payment_events.find({"out_trade_no": otn}))
    assert events
    assert code not in str(events)
    micropay = [e for e in events if e.get("operation") == "micropay"]
    assert micropay and micropay[0]["call"]["request"]["auth_code_tail"] == code[-4:]
    for name in ("payments", "terminal_trades"):
        assert code not in str(list(stack.db[name].find({"out_trade_no": otn})))
