"""Mini-program payments (JSAPI) over HTTP against the sandbox: order, pay, notification,
query on read, expiry, retries, forged notifications, ownership and input checks."""

from __future__ import annotations

import time

import pytest
from conftest import error_of
from pay_v3_support import notification_v3
from payments_support import (
    AGO_1,
    AGO_2,
    AGO_3,
    AGO_4,
    add_bill,
    api_of,
    balance,
    bills,
    both_apis,
    calls,
    confirm,
    customer,
    expire,
    notification_xml,
    notify,
    order,
    order_view,
    pay_jsapi,
    prepay_id,
    replied_fail,
    replied_success,
    wait_status,
)
from waits import wait_until

stack = both_apis  # every test of this module runs over WeChat Pay v2 and v3


def test_jsapi_happy_path_credits_once_settles_bills_oldest_first(stack):
    cust = customer(stack, balance_fen=-15000)
    add_bill(stack, cust["account_no"], AGO_2, 10000)
    add_bill(stack, cust["account_no"], AGO_3, 5000)
    add_bill(stack, cust["account_no"], AGO_1, 8000)
    created = pay_jsapi(stack, cust, 12000)
    params = created["pay_params"]
    assert set(params) == {"timeStamp", "nonceStr", "package", "signType", "paySign"}
    assert params["package"].startswith("prepay_id=")
    otn = created["out_trade_no"]
    assert otn.startswith("P") and len(otn) <= 32
    assert order(stack, otn)["status"] == "pending"
    sent = calls(stack, otn, "unifiedorder")[0]["call"]["request"]
    if api_of(stack) == "v2":
        assert sent["notify_url"] == stack.env["WX_PUBLIC_BASE"] + "/wechat/pay/notify"
        assert sent["openid"] == cust["openid"] and sent["total_fee"] == "12000" and "sign" not in sent
    else:  # the JSON sent to /v3/pay/transactions/jsapi; paySign is RSA over the four lines
        assert sent["notify_url"] == stack.env["WX_PUBLIC_BASE"] + "/wechat/pay/notify/v3"
        assert sent["payer"] == {"openid": cust["openid"]} and sent["amount"] == {"total": 12000, "currency": "CNY"}
        assert params["signType"] == "RSA" and len(params["paySign"]) == 344  # base64 of 256 bytes

    confirm(stack, created)
    doc = wait_status(stack, otn)
    assert doc["status"] == "credited" and doc["transaction_id"].startswith("4200")
    assert balance(stack, cust["account_no"]) == -15000 + 12000
    account = stack.db.accounts.find_one({"account_no": cust["account_no"]})
    assert account["credited"].count(otn) == 1
    b = bills(stack, cust["account_no"])
    assert (b[AGO_3]["paid_fen"], b[AGO_3]["status"]) == (5000, "paid")
    assert (b[AGO_2]["paid_fen"], b[AGO_2]["status"]) == (7000, "partial")
    assert (b[AGO_1]["paid_fen"], b[AGO_1]["status"]) == (0, "unpaid")
    assert b[AGO_2]["settlements"][0]["out_trade_no"] == otn
    credit = stack.db.payment_credits.find_one({"_id": otn})
    assert [s["period"] for s in credit["settlements"]] == [AGO_3, AGO_2]
    # the receipt and the marketing system's webhook, queued once each
    receipt = wait_until(lambda: stack.db.outbox.find_one({"dedupe_key": f"payment:{otn}"}))
    assert receipt["kind"] == "notify" and receipt["payload"]["message"] == "payment_received"
    assert receipt["payload"]["data"]["amount_fen"] == 12000
    assert receipt["payload"]["page"] == f"pages/payments/result?out_trade_no={otn}"
    hook = stack.db.outbox.find_one({"dedupe_key": f"webhook:payment.credited:{otn}"})
    assert hook["payload"]["event"] == "payment.credited" and hook["payload"]["body"]["amount_fen"] == 12000
    assert [s["period"] for s in hook["payload"]["body"]["settlements"]] == [AGO_3, AGO_2]
    assert wait_until(lambda: stack.db.payment_credits.find_one({"_id": otn, "state": "done"}))
    notes = list(stack.db.payment_events.find({"out_trade_no": otn, "kind": "notification"}))
    assert notes and notes[0]["outcome"] == "accepted" and "sign" not in notes[0]["fields"]
    assert wait_until(lambda: order_view(stack, otn)["notify_status"] == "delivered")

    # the customer sees it, with its state; another user does not
    resp = stack.api("GET", f"/api/v1/payments/{otn}", token=cust["token"])
    assert resp.status_code == 200 and resp.json()["payment"]["status"] == "credited"
    listed = stack.api(
        "GET", "/api/v1/payments", token=cust["token"], params={"account_no": cust["account_no"]}
    ).json()["payments"]
    assert [p["out_trade_no"] for p in listed] == [otn]
    stranger = stack.login()
    resp = stack.api("GET", f"/api/v1/payments/{otn}", token=stranger)
    assert resp.status_code == 404 and error_of(resp)["code"] == "payment_not_found"
    assert stack.api("GET", "/api/v1/payments", token=stranger).json()["payments"] == []

    # a repeated notification (here a genuine copy) answers SUCCESS and changes nothing
    again = notify(stack, notification_xml(stack, otn, 12000, transaction_id=doc["transaction_id"]))
    assert replied_success(again)
    assert balance(stack, cust["account_no"]) == -3000
    assert bills(stack, cust["account_no"])[AGO_2]["paid_fen"] == 7000
    assert stack.db.outbox.count_documents({"dedupe_key": {"$regex": otn}}) == 2


def test_payment_larger_than_bills_leaves_the_rest_as_balance(stack):
    cust = customer(stack)
    add_bill(stack, cust["account_no"], AGO_4, 3000)
    created = pay_jsapi(stack, cust, 10000)
    confirm(stack, created)
    wait_status(stack, created["out_trade_no"])
    assert balance(stack, cust["account_no"]) == 10000
    b = bills(stack, cust["account_no"])[AGO_4]
    assert (b["paid_fen"], b["status"]) == (3000, "paid")


def test_get_queries_wechat_when_the_notification_has_not_arrived(stack):
    cust = customer(stack)
    created = pay_jsapi(stack, cust, 2345)
    otn = created["out_trade_no"]
    stack.fault("pay_notify", "late_notify", match=otn)  # the notification comes 3 s later
    confirm(stack, created)
    resp = stack.api("GET", f"/api/v1/payments/{otn}", token=cust["token"])
    assert resp.status_code == 200 and resp.json()["payment"]["status"] == "credited"
    assert calls(stack, otn, "orderquery")
    assert balance(stack, cust["account_no"]) == 2345
    # the late notification then meets a credited order: SUCCESS, nothing more
    wait_until(lambda: order_view(stack, otn)["notify_status"] == "delivered", timeout=15)
    assert balance(stack, cust["account_no"]) == 2345


def test_unpaid_order_past_expiry_is_closed(stack):
    cust = customer(stack)
    created = pay_jsapi(stack, cust, 500)
    otn = created["out_trade_no"]
    resp = stack.api("GET", f"/api/v1/payments/{otn}", token=cust["token"])
    assert resp.json()["payment"]["status"] == "pending"  # asked, NOTPAY, not yet expired
    expire(stack, otn)
    resp = stack.api("GET", f"/api/v1/payments/{otn}", token=cust["token"])
    assert resp.json()["payment"]["status"] == "closed"
    assert order_view(stack, otn)["state"] == "CLOSED"
    assert stack.sandbox_call("POST", "/sandbox/pay/confirm", json={"prepay_id": prepay_id(created)}).status_code == 409
    assert balance(stack, cust["account_no"]) == 0


def test_follow_up_closes_expired_orders_without_anyone_asking(stack):
    cust = customer(stack)
    created = pay_jsapi(stack, cust, 700)
    expire(stack, created["out_trade_no"])
    assert wait_status(stack, created["out_trade_no"], timeout=10)["status"] == "closed"
    assert calls(stack, created["out_trade_no"], "closeorder")


def test_unifiedorder_retried_after_system_error_with_the_same_trade_no(stack):
    cust = customer(stack)
    stack.fault("unifiedorder", "system_error", 1)
    created = pay_jsapi(stack, cust, 800)
    tried = calls(stack, created["out_trade_no"], "unifiedorder")
    assert len(tried) == 2
    first, second = (c["call"]["request"] for c in tried)
    assert {k: v for k, v in first.items() if k != "nonce_str"} == {k: v for k, v in second.items() if k != "nonce_str"}
    confirm(stack, created)
    assert wait_status(stack, created["out_trade_no"])["status"] == "credited"


def test_unifiedorder_timeout_is_retried_and_the_same_prepay_comes_back(stack):
    cust = customer(stack)
    stack.fault("unifiedorder", "timeout", 1)
    created = pay_jsapi(stack, cust, 900)
    outcomes = [c["outcome"] for c in calls(stack, created["out_trade_no"], "unifiedorder")]
    assert outcomes == ["unavailable", "ok"]
    confirm(stack, created)
    assert wait_status(stack, created["out_trade_no"])["status"] == "credited"
    assert balance(stack, cust["account_no"]) == 900


def tampered(stack, otn: str, amount: int) -> bytes:
    """A genuine notification altered in transit: v2's signed amount, v3's ciphertext."""
    if api_of(stack) == "v3":
        return notification_v3(stack, otn, amount, tamper=True)
    return notification_xml(stack, otn, amount).replace(f"[{amount}]".encode(), f"[{amount * 10}]".encode())


@pytest.mark.parametrize(
    "forgery", ["bad_signature", "wrong_amount", "wrong_mch_id", "unknown_order", "tampered", "stale"]
)
def test_forged_notifications_change_nothing(stack, forgery):
    cust = customer(stack)
    created = pay_jsapi(stack, cust, 1000)
    otn = created["out_trade_no"]
    if forgery == "stale" and api_of(stack) == "v2":
        pytest.skip("v2 notifications carry no timestamp")
    body = {
        "bad_signature": lambda: notification_xml(stack, otn, 1000, key="x" * 32),
        "wrong_amount": lambda: notification_xml(stack, otn, 100000),
        "wrong_mch_id": lambda: notification_xml(stack, otn, 1000, mch_id="1900000999"),
        "unknown_order": lambda: notification_xml(stack, "P20990101000000123456789012", 1000),
        "tampered": lambda: tampered(stack, otn, 1000),
        "stale": lambda: notification_v3(stack, otn, 1000, timestamp=int(time.time()) - 301),
    }[forgery]()
    resp = notify(stack, body)
    assert replied_fail(resp), (resp.status_code, resp.text)
    assert order(stack, otn)["status"] == "pending"
    assert stack.db.payment_credits.find_one({"_id": otn}) is None
    assert balance(stack, cust["account_no"]) == 0
    assert order_view(stack, otn)["state"] == "NOTPAY"


def test_bad_signature_on_the_first_delivery_then_the_retry_credits(stack):
    cust = customer(stack)
    created = pay_jsapi(stack, cust, 1500)
    stack.fault("pay_notify", "bad_signature", match=created["out_trade_no"])
    confirm(stack, created)
    assert wait_status(stack, created["out_trade_no"])["status"] == "credited"
    # credited while the retry's reply is on its way back to the sandbox: wait for that reply
    view = wait_until(lambda: (v := order_view(stack, created["out_trade_no"]))["notify_status"] == "delivered" and v)
    attempts = view["notifications"]
    assert attempts[0]["outcome"] == "FAIL" and attempts[-1]["outcome"] == "SUCCESS"
    assert balance(stack, cust["account_no"]) == 1500


def test_duplicate_concurrent_notifications_credit_once(stack):
    cust = customer(stack)
    created = pay_jsapi(stack, cust, 1600)
    stack.fault("pay_notify", "duplicate_notify", match=created["out_trade_no"])
    confirm(stack, created)
    wait_status(stack, created["out_trade_no"])
    wait_until(
        lambda: (
            len(list(stack.db.payment_events.find({"out_trade_no": created["out_trade_no"], "kind": "notification"})))
            >= 2
        )
    )
    assert balance(stack, cust["account_no"]) == 1600


@pytest.mark.parametrize("amount", [0, -5, 1.5, "100", True, None, 5_000_001])
def test_amount_must_be_integer_fen_within_limits(stack, amount):
    cust = customer(stack)
    resp = stack.api(
        "POST", "/api/v1/payments", token=cust["token"], json={"account_no": cust["account_no"], "amount_fen": amount}
    )
    assert resp.status_code == 422, resp.text
    assert error_of(resp)["code"] == "validation_failed"
    assert stack.db.payments.count_documents({"account_no": cust["account_no"]}) == 0


def test_only_bound_accounts_can_be_paid(stack):
    cust = customer(stack)
    other = customer(stack)
    resp = stack.api(
        "POST", "/api/v1/payments", token=cust["token"], json={"account_no": other["account_no"], "amount_fen": 100}
    )
    assert resp.status_code == 404 and error_of(resp)["code"] == "account_not_found"
    resp = stack.api("POST", "/api/v1/payments", json={"account_no": cust["account_no"], "amount_fen": 100})
    assert resp.status_code == 401
