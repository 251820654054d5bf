"""Refunds as WeChat runs them: accepted first, refunded (or closed, or changed) later.

``/secapi/pay/refund`` answering SUCCESS only means accepted; the balance is debited and bills
re-opened when the refund notification or ``refundquery`` says SUCCESS, never before; a
REFUNDCLOSE gives the reservation back; CHANGE is left to the operator; NOTENOUGH and
FREQUENCY_LIMITED are asked again later; TRADE_OVERDUE and USER_ACCOUNT_ABNORMAL are final.
"""

from __future__ import annotations

import secrets

from conftest import Stack
from payments_support import (
    AGO_7,
    AGO_8,
    add_bill,
    balance,
    bills,
    confirm,
    customer,
    pay_jsapi,
    run_script,
    wait_status,
)
from waits import wait_until

from wx_backend.sandbox.pay.model import to_xml
from wx_backend.sandbox.pay.refunds import encrypt_req_info


def paid(stack, amount: int, bills_fen: tuple[int, ...] = ()) -> tuple[dict, str]:
    cust = customer(stack)
    for period, fen in zip((AGO_8, AGO_7), bills_fen, strict=False):
        add_bill(stack, cust["account_no"], period, fen)
    created = pay_jsapi(stack, cust, amount)
    confirm(stack, created)
    wait_status(stack, created["out_trade_no"], ("credited",))
    return cust, created["out_trade_no"]


def refund_doc(stack, refund_no: str) -> dict:
    return stack.db.payment_refunds.find_one({"_id": refund_no})


def wait_refund(stack, refund_no: str, states: tuple[str, ...], booked: bool = False, timeout: float = 60) -> dict:
    return wait_until(
        lambda: (
            (r := refund_doc(stack, refund_no)) and r["state"] in states and (not booked or r.get("booked_at")) and r
        ),
        timeout=timeout,
    )


def refund_script(stack, otn: str, amount: int, refund_no: str):
    return run_script(stack, "scripts.refund", otn, "--amount-fen", str(amount), "--refund-no", refund_no)


def test_a_refund_is_booked_when_wechat_notifies_success_not_when_it_accepts(stack):
    booked_on_success(stack)


def test_a_v3_refund_is_booked_from_its_notification_too(stack_v3):
    """v3: PROCESSING at first, then REFUND.SUCCESS (signed, AES-256-GCM) or the refund query."""
    booked_on_success(stack_v3)


def booked_on_success(stack) -> None:
    cust, otn = paid(stack, 10000, (3000, 4000))  # 3000 left as balance
    no = cust["account_no"]
    refund_no = f"R{secrets.token_hex(6)}"
    out = refund_script(stack, otn, 5000, refund_no)
    assert out.returncode == 0, out.stderr
    assert "accepted" in out.stdout or "succeeded" in out.stdout
    done = wait_refund(stack, refund_no, ("succeeded",), booked=True)
    assert done["accepted_at"] <= done["finished_at"]
    # WeChat's notification decided it: recorded, answered SUCCESS
    notes = wait_until(
        lambda: list(stack.db.payment_events.find({"refund_no": refund_no, "kind": "refund_notification"}))
    )
    assert notes[0]["outcome"] == "accepted" and notes[0]["fields"]["refund_status"] == "SUCCESS"
    view = stack.sandbox_call("GET", "/sandbox/pay/orders", params={"out_trade_no": otn}).json()
    assert view["refunds"][0]["status"] == "SUCCESS"
    assert wait_until(lambda: view_notified(stack, otn), timeout=30)
    assert balance(stack, no) == 5000
    b = bills(stack, no)  # 3000 out of the balance part, 2000 back out of the newest bill
    assert (b[AGO_7]["paid_fen"], b[AGO_8]["paid_fen"]) == (2000, 3000)
    again = refund_script(stack, otn, 5000, refund_no)  # the same number: nothing more
    assert again.returncode == 0, again.stderr
    assert balance(stack, no) == 5000
    assert stack.db.payments.find_one({"out_trade_no": otn})["refunded_fen"] == 5000


def view_notified(stack, otn: str) -> bool:
    view = stack.sandbox_call("GET", "/sandbox/pay/orders", params={"out_trade_no": otn}).json()
    return any(n.get("outcome") == "SUCCESS" for r in view["refunds"] for n in r.get("notifications", []))


def test_a_closed_refund_books_nothing_and_gives_the_amount_back(stack):
    cust, otn = paid(stack, 6000, (2000,))
    no = cust["account_no"]
    before = balance(stack, no)
    stack.fault("refund", "refund_close", match=otn)
    refund_no = f"R{secrets.token_hex(6)}"
    out = refund_script(stack, otn, 6000, refund_no)
    assert out.returncode == 0, out.stderr
    wait_refund(stack, refund_no, ("closed",))
    assert balance(stack, no) == before
    assert bills(stack, no)[AGO_8]["paid_fen"] == 2000
    order = stack.db.payments.find_one({"out_trade_no": otn})
    assert order.get("refunded_fen", 0) == 0 and order["refund_reserved_fen"] == 0
    # the whole amount may be asked again under a new number
    second = f"R{secrets.token_hex(6)}"
    assert refund_script(stack, otn, 6000, second).returncode == 0
    wait_refund(stack, second, ("succeeded",), booked=True)
    assert balance(stack, no) == before - 6000
    assert bills(stack, no)[AGO_8]["paid_fen"] == 0  # the bill it settled is open again


def test_a_changed_refund_is_left_to_the_operator_and_not_booked(stack):
    cust, otn = paid(stack, 3000)
    stack.fault("refund", "refund_change", match=otn)
    refund_no = f"R{secrets.token_hex(6)}"
    assert refund_script(stack, otn, 1000, refund_no).returncode == 0
    wait_refund(stack, refund_no, ("change",))
    assert balance(stack, cust["account_no"]) == 3000
    assert "ended CHANGE" in stack.logs()


def test_notenough_and_frequency_limited_are_asked_again_later_not_final(stack):
    for fault in ("notenough", "frequency_limited"):
        cust, otn = paid(stack, 2000)
        stack.fault("refund", fault, match=otn)
        refund_no = f"R{secrets.token_hex(6)}"
        out = refund_script(stack, otn, 2000, refund_no)
        assert out.returncode == 0, out.stderr
        first = refund_doc(stack, refund_no)
        assert first["state"] == "requested" and first["last_err_code"] == fault.upper()
        assert balance(stack, cust["account_no"]) == 2000
        wait_refund(stack, refund_no, ("succeeded",), booked=True, timeout=90)  # the follow-up asked again
        assert balance(stack, cust["account_no"]) == 0


def test_final_refusals_give_the_reservation_back(stack):
    cust, otn = paid(stack, 2000)
    stack.fault("refund", "user_account_abnormal", match=otn)
    out = refund_script(stack, otn, 500, f"R{secrets.token_hex(6)}")
    assert out.returncode == 1 and "refund_refused" in out.stderr and "注销" in out.stderr
    cust2, old = paid(stack, 2000)
    resp = stack.sandbox_call("POST", "/sandbox/pay/age", json={"out_trade_no": old, "days": 400})
    assert resp.status_code == 200, resp.text
    out = refund_script(stack, old, 500, f"R{secrets.token_hex(6)}")
    assert out.returncode == 1 and "refund_refused" in out.stderr and "一年" in out.stderr
    for number in (otn, old):
        order = stack.db.payments.find_one({"out_trade_no": number})
        assert order["refund_reserved_fen"] == 0 and order["refund_nos"] == []
    assert balance(stack, cust["account_no"]) == balance(stack, cust2["account_no"]) == 2000


def test_a_forged_or_unknown_refund_notification_changes_nothing(stack):
    cust, otn = paid(stack, 1500)
    stack.fault("refund", "refund_change", match=otn)  # WeChat itself will not finish it as SUCCESS
    refund_no = f"R{secrets.token_hex(6)}"
    assert refund_script(stack, otn, 1500, refund_no).returncode == 0
    fields = {
        "out_trade_no": otn,
        "out_refund_no": refund_no,
        "refund_id": "5030x",
        "total_fee": "1500",
        "refund_fee": "1500",
        "refund_status": "SUCCESS",
        "transaction_id": "4200x",
    }

    def note(key: str, **changes) -> str:
        body = to_xml(
            {
                "return_code": "SUCCESS",
                "appid": stack.env["WX_MP_APPID"],
                "mch_id": stack.env["WX_PAY_MCH_ID"],
                "nonce_str": "n1",
                "req_info": encrypt_req_info(key, {**fields, **changes}),
            }
        )
        resp = stack.api("POST", "/wechat/pay/refund-notify", data=body.encode(), headers={"Content-Type": "text/xml"})
        assert resp.status_code == 200
        return resp.text

    assert "FAIL" in note("another-merchants-key-0123456789ab")
    assert "FAIL" in note(stack.env["WX_PAY_API_KEY"], refund_fee="1")
    assert "FAIL" in note(stack.env["WX_PAY_API_KEY"], out_refund_no="Rnotours")
    assert balance(stack, cust["account_no"]) == 1500
    wait_refund(stack, refund_no, ("change",))
    assert "SUCCESS" in note(stack.env["WX_PAY_API_KEY"])  # a late word on a finished refund: answered, no change
    assert refund_doc(stack, refund_no)["state"] == "change"
    assert balance(stack, cust["account_no"]) == 1500


def test_an_accepted_refund_waits_as_long_as_wechat_takes(workdir, mongodb_uri):
    """WeChat takes its time (a bank card: days): the refund stays accepted, the follow-up's
    refundquery sees PROCESSING, nothing is booked; WeChat's SUCCESS then books it once."""
    (workdir / "slow-refunds").mkdir()
    own = Stack(workdir / "slow-refunds", mongodb_uri, extra_env={"WX_SANDBOX_REFUND_DELAY": "86400"}).start()
    try:
        cust, otn = paid(own, 4000)
        refund_no = f"R{secrets.token_hex(6)}"
        out = refund_script(own, otn, 1500, refund_no)
        assert out.returncode == 0 and "accepted" in out.stdout, out.stdout + out.stderr
        # the follow-up asks WeChat (every second in tests) and hears PROCESSING
        wait_until(lambda: len(list(own.db.payment_events.find({"kind": "call", "operation": "refundquery"}))) >= 2)
        assert refund_doc(own, refund_no)["state"] == "accepted"
        assert balance(own, cust["account_no"]) == 4000
        assert own.db.payments.find_one({"out_trade_no": otn}).get("refunded_fen", 0) == 0
        resp = own.sandbox_call(
            "POST", "/sandbox/pay/refund-outcome", json={"out_refund_no": refund_no, "status": "SUCCESS"}
        )
        assert resp.status_code == 200, resp.text
        wait_refund(own, refund_no, ("succeeded",), booked=True)
        assert balance(own, cust["account_no"]) == 2500
        again = own.sandbox_call(
            "POST", "/sandbox/pay/refund-outcome", json={"out_refund_no": refund_no, "status": "CHANGE"}
        )
        assert again.status_code == 409
    finally:
        own.stop()
