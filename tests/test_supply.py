"""智能交费 over HTTP: balance estimates and the low-balance message once per crossing, the
customer's alert settings, 欠费提醒 timing, and the supply timeline from 停电预警 through the
payment and the reconnection request to 复电."""

from __future__ import annotations

import datetime as dt
import json
from zoneinfo import ZoneInfo

from conftest import error_of, put_account
from payments_support import confirm, pay_jsapi, run_script, wait_status
from query_support import flat_bill, put_bill
from supply_support import CATALOGUE, customer, hall, iso, oa_messages, settled
from waits import wait_until

__all__ = ["hall"]

SHANGHAI = ZoneInfo("Asia/Shanghai")


def estimate(stack, account_no: str, balance_fen: int, as_of: dt.datetime, daily_fen: int | None = 800, **extra):
    return stack.internal(
        "PUT",
        f"/internal/v1/accounts/{account_no}/balance-estimate",
        json={"balance_fen": balance_fen, "as_of": iso(as_of), "daily_fen": daily_fen, **extra},
    )


def event(stack, account_no: str, kind: str, at: dt.datetime, **extra):
    return stack.internal(
        "POST", f"/internal/v1/accounts/{account_no}/supply-events", json={"kind": kind, "at": iso(at), **extra}
    )


def test_low_balance_message_once_per_crossing(hall):
    stack, _, _ = hall
    cust = customer(stack, billing_mode="prepaid")
    no = cust["account_no"]
    start = dt.datetime.now(dt.UTC) - dt.timedelta(days=5)
    for day, balance in enumerate((8000, 4000, 3000, 6000, 4000)):
        resp = estimate(stack, no, balance, start + dt.timedelta(days=day))
        assert resp.status_code == 200 and resp.json()["applied"] is True, resp.text
    # the messages are queued by the estimates themselves: the count is final now
    queued = list(stack.db.outbox.find({"dedupe_key": {"$regex": f"^low_balance:{no}:"}}).sort("created_at", 1))
    assert [q["payload"]["data"]["balance_fen"] for q in queued] == [4000, 4000]
    wait_until(lambda: settled(stack, cust["user_id"]))
    sent = oa_messages(stack, cust["oa_openid"], "low_balance")
    assert len(sent) == 2
    assert sent[0]["data"]["amount2"] == "40.00元" and sent[0]["data"]["thing3"] == "预计可用约5天，请及时交费"

    # an older estimate arriving late is kept out; the same one again changes nothing
    resp = estimate(stack, no, 100, start)
    assert resp.status_code == 200 and resp.json()["applied"] is False
    assert estimate(stack, no, 4000, start + dt.timedelta(days=4)).json()["applied"] is True
    assert stack.db.outbox.count_documents({"dedupe_key": {"$regex": f"^low_balance:{no}:"}}) == 2


def test_alert_settings_and_the_balance_view(hall):
    stack, _, _ = hall
    cust = customer(stack, billing_mode="prepaid")
    no, token = cust["account_no"], cust["token"]
    view = stack.api("GET", f"/api/v1/accounts/{no}/alerts", token=token).json()["alerts"]
    assert (view["low_balance_fen"], view["enabled"]) == (5000, True)
    assert (view["balance_fen"], view["days_left"]) == (None, None)
    assert view["billing_mode"] == "prepaid" and view["supply_state_label"] == "正常供电"

    now = dt.datetime.now(dt.UTC)
    assert estimate(stack, no, 9050, now, daily_fen=1000, cutoff_date="2026-12-31").status_code == 200
    view = stack.api("GET", f"/api/v1/accounts/{no}/alerts", token=token).json()["alerts"]
    assert (view["balance_fen"], view["daily_fen"], view["days_left"]) == (9050, 1000, 9)
    assert view["expected_cutoff_date"] == "2026-12-31"
    assert estimate(stack, no, 9050, now + dt.timedelta(minutes=1), daily_fen=None).status_code == 200
    assert stack.api("GET", f"/api/v1/accounts/{no}/alerts", token=token).json()["alerts"]["days_left"] is None

    # raising the threshold above the balance re-arms it: the next estimate sends 余额不足
    resp = stack.api("PUT", f"/api/v1/accounts/{no}/alerts", token=token, json={"low_balance_fen": 10000})
    assert resp.status_code == 200 and resp.json()["alerts"]["low_balance_fen"] == 10000
    estimate(stack, no, 9000, now + dt.timedelta(minutes=2))
    assert stack.db.outbox.count_documents({"dedupe_key": {"$regex": f"^low_balance:{no}:"}}) == 1
    # switched off: nothing, even after a new crossing
    stack.api("PUT", f"/api/v1/accounts/{no}/alerts", token=token, json={"enabled": False})
    estimate(stack, no, 20000, now + dt.timedelta(minutes=3))
    estimate(stack, no, 10, now + dt.timedelta(minutes=4))
    assert stack.db.outbox.count_documents({"dedupe_key": {"$regex": f"^low_balance:{no}:"}}) == 1

    # bad input: every field named, nothing changed
    resp = stack.api(
        "PUT",
        f"/api/v1/accounts/{no}/alerts",
        token=token,
        json={"low_balance_fen": 12.5, "enabled": "yes", "colour": "red"},
    )
    assert resp.status_code == 422
    assert {d["field"] for d in error_of(resp)["details"]} == {"low_balance_fen", "enabled", "colour"}
    assert stack.api("GET", f"/api/v1/accounts/{no}/alerts", token=token).json()["alerts"]["enabled"] is False
    # another user: not found, for reading and for writing
    stranger = stack.login()
    for method, body in (("GET", None), ("PUT", {"enabled": True})):
        resp = stack.api(method, f"/api/v1/accounts/{no}/alerts", token=stranger, json=body)
        assert resp.status_code == 404 and error_of(resp)["code"] == "account_not_found"
    # the marketing system: postpaid accounts take no estimates; bad estimates are refused
    postpaid = put_account(stack)
    resp = estimate(stack, postpaid["account_no"], 100, now)
    assert resp.status_code == 409 and error_of(resp)["code"] == "account_not_prepaid"
    resp = stack.internal(
        "PUT",
        f"/internal/v1/accounts/{no}/balance-estimate",
        json={"balance_fen": "1", "as_of": "yesterday", "daily_fen": -1},
    )
    assert resp.status_code == 422
    assert {d["field"] for d in error_of(resp)["details"]} == {"balance_fen", "as_of", "daily_fen"}
    resp = stack.internal("PUT", f"/internal/v1/accounts/{no}", json={"billing_mode": "monthly"})
    assert resp.status_code == 422 and "billing_mode" in {d["field"] for d in error_of(resp)["details"]}


def test_overdue_reminder_a_configured_number_of_days_before_the_due_date(hall):
    stack, _, _ = hall
    cust = customer(stack)  # postpaid by default
    no = cust["account_no"]
    today = dt.datetime.now(SHANGHAI).date()
    due = {
        "2026-01": today + dt.timedelta(days=2),
        "2026-02": today + dt.timedelta(days=5),
        "2026-03": today - dt.timedelta(days=1),
        "2026-04": today + dt.timedelta(days=3),
    }
    for period, day in due.items():
        if period != "2026-04":
            put_bill(stack, no, period, flat_bill(100, 5600, due=day.isoformat()))
    # 2026-04 arrives already paid at the counter: no reminder (put unpaid first, a pass of the job
    # in between would rightly remind)
    put_bill(stack, no, "2026-04", {**flat_bill(100, 5600, due=due["2026-04"].isoformat()), "offline_paid_fen": 5600})
    prepaid = customer(stack, billing_mode="prepaid")
    put_bill(stack, prepaid["account_no"], "2026-01", flat_bill(100, 5600, due=due["2026-01"].isoformat()))

    key = f"overdue:{no}:2026-01:{cust['user_id']}"
    reminder = wait_until(lambda: stack.db.outbox.find_one({"dedupe_key": key}))
    assert reminder["payload"]["data"] == {
        "account_no": no,
        "period": "2026-01",
        "owed_fen": 5600,
        "due_date": due["2026-01"].isoformat(),
    }
    # two more passes of the job: still only that one, once
    runs = stack.db.jobs.find_one({"_id": "supply"})["runs"]
    wait_until(lambda: stack.db.jobs.find_one({"_id": "supply"})["runs"] >= runs + 2)
    assert [d["dedupe_key"] for d in stack.db.outbox.find({"dedupe_key": {"$regex": f"^overdue:{no}:"}})] == [key]
    assert stack.db.outbox.count_documents({"dedupe_key": {"$regex": f"^overdue:{prepaid['account_no']}:"}}) == 0
    wait_until(lambda: settled(stack, cust["user_id"]))
    sent = oa_messages(stack, cust["oa_openid"], "overdue_reminder")
    assert len(sent) == 1 and sent[0]["data"]["amount3"] == "56.00元"


def test_cut_off_payment_reconnection_and_restored_in_order(hall):
    stack, _, hooks = hall
    cust = customer(stack, billing_mode="prepaid")
    no, token = cust["account_no"], cust["token"]
    now = dt.datetime.now(dt.UTC)
    cutoff_at = now + dt.timedelta(hours=1)
    resp = event(stack, no, "cutoff_warning", now - dt.timedelta(hours=2), reason="余额不足", cutoff_at=iso(cutoff_at))
    assert resp.status_code == 201, resp.text
    view = stack.api("GET", f"/api/v1/accounts/{no}/alerts", token=token).json()["alerts"]
    assert view["supply_state_label"] == "停电预警"
    assert view["expected_cutoff_date"] == cutoff_at.astimezone(SHANGHAI).date().isoformat()
    again = event(stack, no, "cutoff_warning", now - dt.timedelta(hours=2), reason="余额不足", cutoff_at=iso(cutoff_at))
    assert again.status_code == 200 and again.json()["created"] is False
    assert event(stack, no, "cut_off", now - dt.timedelta(minutes=30), reason="欠费停电").status_code == 201
    assert stack.api("GET", f"/api/v1/accounts/{no}/supply", token=token).json()["state_label"] == "已停电"

    wait_until(lambda: oa_messages(stack, cust["oa_openid"], "cutoff_warning"))  # the customer is warned first
    created = pay_jsapi(stack, cust, 20000)
    confirm(stack, created)
    otn = created["out_trade_no"]
    assert wait_status(stack, otn)["status"] == "credited"
    hook = wait_until(
        lambda: (
            hooks.of("account.reconnect_requested")
            and [h for h in hooks.of("account.reconnect_requested") if h["body"]["account_no"] == no]
        )
    )
    assert len(hook) == 1 and hook[0]["body"]["out_trade_no"] == otn and hook[0]["body"]["amount_fen"] == 20000
    assert hook[0]["id"] == f"webhook:account.reconnect_requested:{otn}"
    timeline = stack.api("GET", f"/api/v1/accounts/{no}/supply", token=token).json()
    assert timeline["state"] == "reconnecting" and timeline["state_label"] == "复电处理中"

    wait_until(lambda: oa_messages(stack, cust["oa_openid"], "payment_received"))
    # operations see it waiting for 复电
    out = run_script(stack, "scripts.pending", "reconnections", "--older-than", "0", "--json")
    assert out.returncode == 3, out.stderr
    assert {"account_no": no, "out_trade_no": otn} in [
        {k: r[k] for k in ("account_no", "out_trade_no")} for r in json.loads(out.stdout)
    ]

    restored_at = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)
    assert event(stack, no, "restored", restored_at).status_code == 201
    out = run_script(stack, "scripts.pending", "reconnections", "--older-than", "0", "--json")
    assert no not in [r["account_no"] for r in json.loads(out.stdout)]
    timeline = stack.api("GET", f"/api/v1/accounts/{no}/supply", token=token).json()
    assert timeline["state"] == "normal"
    assert [(e["kind"], e["label"]) for e in timeline["events"]] == [
        ("cutoff_warning", "停电预警"),
        ("cut_off", "已停电"),
        ("reconnect_requested", "复电处理中"),
        ("restored", "已复电"),
    ]
    assert timeline["events"][2]["out_trade_no"] == otn and timeline["events"][2]["amount_fen"] == 20000
    # the customer's messages, in that order: 停电预警, the receipt, 复电
    wait_until(lambda: len(oa_messages(stack, cust["oa_openid"])) >= 3 and settled(stack, cust["user_id"]))
    order = {
        CATALOGUE[k].official_account.template_id: k for k in ("cutoff_warning", "payment_received", "supply_restored")
    }
    assert [order.get(m["template_id"]) for m in oa_messages(stack, cust["oa_openid"])] == [
        "cutoff_warning",
        "payment_received",
        "supply_restored",
    ]
    # one request per payment, however many passes of the job ran
    runs = stack.db.jobs.find_one({"_id": "supply"})["runs"]
    wait_until(lambda: stack.db.jobs.find_one({"_id": "supply"})["runs"] >= runs + 2)
    assert len([h for h in hooks.of("account.reconnect_requested") if h["body"]["account_no"] == no]) == 1


def test_bad_supply_events_are_refused_and_change_nothing(hall):
    stack, _, _ = hall
    cust = customer(stack, billing_mode="prepaid")
    no = cust["account_no"]
    resp = stack.internal(
        "POST",
        f"/internal/v1/accounts/{no}/supply-events",
        json={"kind": "blackout", "at": "soon", "reason": "", "extra": 1},
    )
    assert resp.status_code == 422
    assert {d["field"] for d in error_of(resp)["details"]} == {"kind", "at", "reason", "extra"}
    resp = event(stack, no, "cut_off", dt.datetime.now(dt.UTC), cutoff_at=iso(dt.datetime.now(dt.UTC)))
    assert resp.status_code == 422 and error_of(resp)["details"][0]["field"] == "cutoff_at"
    resp = event(stack, "0000000000", "cut_off", dt.datetime.now(dt.UTC))
    assert resp.status_code == 404 and error_of(resp)["code"] == "account_not_found"
    assert stack.db.supply_events.count_documents({"account_no": no}) == 0
    assert stack.api("GET", f"/api/v1/accounts/{no}/supply", token=cust["token"]).json()["events"] == []
    # an older event arriving late is kept in the timeline but does not turn the state back
    now = dt.datetime.now(dt.UTC)
    event(stack, no, "restored", now)
    event(stack, no, "cut_off", now - dt.timedelta(hours=1))
    timeline = stack.api("GET", f"/api/v1/accounts/{no}/supply", token=cust["token"]).json()
    assert timeline["state"] == "normal" and [e["kind"] for e in timeline["events"]] == ["cut_off", "restored"]
