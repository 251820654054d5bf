"""Crediting exactly once: concurrent duplicate notifications, crashes between the steps
(resumed by the follow-up), random faults with a killed process, refunds, reconciliation."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from conftest import Stack
from pay_support import bill_clock, gateway, run, trade_no
from pay_v3_support import gateway_v3
from payments_chaos import chaos, duplicate_storm
from payments_support import (
    AGO_5,
    AGO_6,
    AGO_7,
    AGO_8,
    add_bill,
    api_of,
    auth_code,
    balance,
    bills,
    both_apis,
    confirm,
    customer,
    pay_jsapi,
    register_terminal,
    run_script,
    terminal_pay,
    wait_status,
)
from waits import wait_until

stack = both_apis  # every test of this module runs over WeChat Pay v2 and v3


def test_concurrent_duplicate_notifications_credit_each_order_once(stack):
    result = duplicate_storm(stack, orders=20, copies=10, customers=5, threads=40)
    print("duplicate notifications:", result)
    assert result["notifications"] == 200 and result["answered_success"] == 200
    assert result["credits"] == result["credited_orders"] == result["markers"] == 20
    assert result["markers_more_than_once"] == 0
    assert result["balance_fen"] == result["expected_fen"]
    assert result["notifications_recorded"] == 200


@pytest.mark.parametrize("crash_after", ["credit_recorded", "account_credited", "one_bill_settled"])
def test_a_crash_between_steps_is_finished_by_the_follow_up_without_double_counting(stack, crash_after):
    """The documents are left as a process dying at that point leaves them; the follow-up
    (embedded in the running backend) must finish the job exactly once."""
    cust = customer(stack, balance_fen=-9000)
    add_bill(stack, cust["account_no"], AGO_6, 4000)
    add_bill(stack, cust["account_no"], AGO_5, 5000)
    created = pay_jsapi(stack, cust, 7000)
    otn = created["out_trade_no"]
    no = cust["account_no"]
    now = datetime.now(UTC)
    # the state after the crash (the order at WeChat is unpaid here: only our records matter)
    stack.db.payments.update_one(
        {"out_trade_no": otn},
        {"$set": {"status": "paid", "transaction_id": "4200x", "paid_at": now, "next_check_at": None}},
    )
    stack.db.payment_credits.insert_one(
        {
            "_id": otn,
            "account_no": no,
            "amount_fen": 7000,
            "transaction_id": "4200x",
            "paid_at": now,
            "state": "owed",
            "created_at": now - timedelta(seconds=5),
        }
    )
    if crash_after in ("account_credited", "one_bill_settled"):
        stack.db.accounts.update_one({"account_no": no}, {"$inc": {"balance_fen": 7000}, "$push": {"credited": otn}})
    if crash_after == "one_bill_settled":
        stack.db.bills.update_one(
            {"account_no": no, "period": AGO_6},
            {
                "$set": {"paid_fen": 4000, "status": "paid"},
                "$push": {"settlements": {"out_trade_no": otn, "amount_fen": 4000, "at": now}},
            },
        )
    assert wait_status(stack, otn, ("credited",), timeout=15)["status"] == "credited"
    assert balance(stack, no) == -9000 + 7000
    assert stack.db.accounts.find_one({"account_no": no})["credited"].count(otn) == 1
    b = bills(stack, no)
    assert (b[AGO_6]["paid_fen"], b[AGO_6]["status"], len(b[AGO_6]["settlements"])) == (4000, "paid", 1)
    assert (b[AGO_5]["paid_fen"], b[AGO_5]["status"], len(b[AGO_5]["settlements"])) == (3000, "partial", 1)


def test_random_faults_and_a_killed_process_every_order_ends_right(stack, workdir):
    """A smaller run of bench/prove_payments.py (which runs 200): its own stack, so the
    sandbox's totals are this run's alone."""
    api = api_of(stack)
    (workdir / f"chaos-{api}").mkdir()
    own = Stack(workdir / f"chaos-{api}", stack.mongodb_uri, extra_env={"WX_PAY_API": api}).start()
    try:
        result = chaos(own, 30, seed=11, customers=6)
    finally:
        own.stop()
    print("chaos:", json.dumps(result, ensure_ascii=False))
    assert result["client_outcomes"].get("killed_process") == 1
    assert result["not_final"] == 0
    assert result["credits"] == result["credited_orders"] > 0
    assert result["credits_without_credited_order"] == 0
    assert result["markers_more_than_once"] == 0 and result["markers_missing"] == 0
    assert result["credit_fen"] == result["sandbox_paid_fen"] == result["balance_gain_fen"]
    assert result["credited_orders"] == result["sandbox_paid_count"]
    assert result["credited_vs_sandbox_paid_mismatch"] == []


def test_refund_partial_then_rest_debits_once_and_reopens_bills(stack):
    cust = customer(stack)
    add_bill(stack, cust["account_no"], AGO_8, 3000)
    add_bill(stack, cust["account_no"], AGO_7, 4000)
    created = pay_jsapi(stack, cust, 10000)  # settles 3000 + 4000, leaves 3000 as balance
    confirm(stack, created)
    otn = created["out_trade_no"]
    wait_status(stack, otn)
    no = cust["account_no"]
    first = run_script(stack, "scripts.refund", otn, "--amount-fen", "2000", "--refund-no", f"R{otn[-10:]}a")
    assert first.returncode == 0, first.stderr
    booked(stack, f"R{otn[-10:]}a")  # WeChat said SUCCESS (notification or refundquery)
    again = run_script(stack, "scripts.refund", otn, "--amount-fen", "2000", "--refund-no", f"R{otn[-10:]}a")
    assert again.returncode == 0, again.stderr  # the same number: no second refund
    assert balance(stack, no) == 8000
    b = bills(stack, no)
    assert (b[AGO_8]["paid_fen"], b[AGO_7]["paid_fen"]) == (3000, 4000)  # out of the balance part
    second = run_script(stack, "scripts.refund", otn, "--amount-fen", "5000", "--refund-no", f"R{otn[-10:]}b")
    assert second.returncode == 0, second.stderr
    booked(stack, f"R{otn[-10:]}b")
    assert balance(stack, no) == 3000
    b = bills(stack, no)  # 1000 of the left-over, then 4000 back out of the newest bill
    assert (b[AGO_7]["paid_fen"], b[AGO_7]["status"]) == (0, "unpaid")
    assert (b[AGO_8]["paid_fen"], b[AGO_8]["status"]) == (3000, "paid")
    too_much = run_script(stack, "scripts.refund", otn, "--amount-fen", "3001", "--refund-no", f"R{otn[-10:]}c")
    assert too_much.returncode == 1 and "refund_exceeds_payment" in too_much.stderr
    order = stack.db.payments.find_one({"out_trade_no": otn})
    assert order["refunded_fen"] == 7000
    view = stack.sandbox_call("GET", "/sandbox/pay/orders", params={"out_trade_no": otn}).json()
    assert view["refunded_fee"] == 7000 and len(view["refunds"]) == 2


def age_everything(stack, days: int) -> None:
    """Every order and refund of the stack happened ``days`` earlier, at WeChat and here."""
    shift = timedelta(days=days)
    for view in stack.sandbox_call("GET", "/sandbox/pay/orders").json()["orders"]:
        stack.sandbox_call(
            "POST", "/sandbox/pay/age", json={"out_trade_no": view["out_trade_no"], "days": days}
        ).raise_for_status()
    for doc in stack.db.payments.find({"paid_at": {"$ne": None}}):
        stack.db.payments.update_one({"_id": doc["_id"]}, {"$set": {"paid_at": doc["paid_at"] - shift}})
    for doc in stack.db.payment_refunds.find({"accepted_at": {"$ne": None}}):
        stack.db.payment_refunds.update_one({"_id": doc["_id"]}, {"$set": {"accepted_at": doc["accepted_at"] - shift}})


def booked(stack, refund_no: str) -> dict:
    return wait_until(
        lambda: (
            (r := stack.db.payment_refunds.find_one({"_id": refund_no}))
            and r["state"] == "succeeded"
            and r.get("booked_at")
            and r
        )
    )


def test_reconcile_agrees_then_lists_every_difference(stack, workdir):
    (workdir / f"recon-{api_of(stack)}").mkdir()
    own = Stack(workdir / f"recon-{api_of(stack)}", stack.mongodb_uri, extra_env={"WX_PAY_API": api_of(stack)}).start()
    try:
        cust = customer(own)
        paid = []
        for amount in (1111, 2222):
            created = pay_jsapi(own, cust, amount)
            confirm(own, created)
            paid.append(created["out_trade_no"])
        terminal = register_terminal(own)
        answer = terminal_pay(
            own, terminal, {"account_no": cust["account_no"], "amount_fen": 3333, "auth_code": auth_code(own, "pay")}
        ).json()
        paid.append(answer["out_trade_no"])
        for otn in paid:
            wait_status(own, otn)
        assert run_script(own, "scripts.refund", paid[0], "--amount-fen", "111", "--refund-no", "RR1").returncode == 0
        booked(own, "RR1")
        today = datetime.now(ZoneInfo("Asia/Shanghai")).date()
        # WeChat builds a day's bill the next morning: today is refused, with a clear message
        early = run_script(own, "scripts.reconcile", "--date", today.isoformat())
        assert early.returncode == 2 and "bill_not_available" in early.stderr and "10:00" in early.stderr
        # so the day is moved two days back, at WeChat and here alike
        day = today - timedelta(days=2)
        age_everything(own, days=2)
        clean = run_script(own, "scripts.reconcile", "--date", day.isoformat())
        assert clean.returncode == 0, clean.stdout + clean.stderr
        assert "0 differences" in clean.stdout
        # at 09:30 the next day WeChat is still building the bill: asked again, then refused
        next_day = day + timedelta(days=1)
        creating_at = datetime(next_day.year, next_day.month, next_day.day, 9, 30, tzinfo=ZoneInfo("Asia/Shanghai"))
        with bill_clock(own, creating_at):
            creating = run_script(own, "scripts.reconcile", "--date", day.isoformat(), env={"WX_PAY_BILL_RETRY": "0.2"})
        assert creating.returncode == 2 and "bill_creating" in creating.stderr
        assert (
            own.db.payment_events.count_documents(
                {"kind": "call", "operation": "downloadbill", "outcome": "bill_creating"}
            )
            == 5
        )

        # now break the books: a payment WeChat has but we do not (with commas in its 商品名称),
        # an amount and a status
        api = gateway_v3(own) if api_of(own) == "v3" else gateway(own)
        stray = trade_no("X")
        run(lambda: api.micropay(stray, 500, "电费,含,逗号", auth_code(own, "pay"), "127.0.0.1"))
        own.sandbox_call("POST", "/sandbox/pay/age", json={"out_trade_no": stray, "days": 2}).raise_for_status()
        own.db.payments.update_one({"out_trade_no": paid[1]}, {"$set": {"amount_fen": 2000}})
        own.db.payments.update_one({"out_trade_no": paid[2]}, {"$set": {"status": "reversed"}})
        bad = run_script(own, "scripts.reconcile", "--date", day.isoformat(), "--json")
        assert bad.returncode == 1, bad.stderr
        differences = json.loads(bad.stdout)["differences"]
        kinds = {(d["kind"], d.get("out_trade_no")) for d in differences}
        assert kinds == {("missing_ours", stray), ("amount_mismatch", paid[1]), ("status_mismatch", paid[2])}
        assert next(d for d in differences if d["kind"] == "missing_ours")["wechat"]["amount_fen"] == 500

        # "No Bill Exist" is WeChat's "no trade that day": fine for an empty day, a difference otherwise
        empty = run_script(own, "scripts.reconcile", "--date", (today - timedelta(days=20)).isoformat())
        assert empty.returncode == 0 and "0 differences" in empty.stdout and "No Bill Exist" in empty.stdout
        lone = today - timedelta(days=3)
        moved = datetime(lone.year, lone.month, lone.day, 12, tzinfo=ZoneInfo("Asia/Shanghai"))
        own.db.payments.update_one({"out_trade_no": paid[0]}, {"$set": {"paid_at": moved}})
        none = run_script(own, "scripts.reconcile", "--date", lone.isoformat(), "--json")
        assert none.returncode == 1, none.stderr
        assert [d["kind"] for d in json.loads(none.stdout)["differences"]] == ["no_bill"]
        old = run_script(own, "scripts.reconcile", "--date", "2020-01-01")
        assert old.returncode == 2 and "bill_expired" in old.stderr
    finally:
        own.stop()
