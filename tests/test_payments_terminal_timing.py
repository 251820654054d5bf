"""Payment codes with WeChat's real times: an unpaid order revoked by WeChat after 45 s, no
reverse within 15 s, the production poll window of 30 s. A customer who never types the
password gets a final answer (reversed) within the stated bound, so the cashier may scan again
without any risk of a double charge; a bad window stops the start."""

from __future__ import annotations

import time

from conftest import Stack, put_account
from payments_support import auth_code, calls, order, order_view, register_terminal, run_script, terminal_pay

PRODUCTION = {
    "WX_SANDBOX_TIME_SCALE": "1",
    "WX_PAY_TIME_SCALE": "1",
    "WX_PAY_POLL_WINDOW": "30",
    "WX_PAY_POLL_INTERVAL": "3",
    "WX_PAY_QUERY_DELAY": "5",
}


def test_an_unpaid_code_ends_reversed_within_the_bound_at_production_times(workdir, mongodb_uri):
    (workdir / "micropay-prod").mkdir()
    own = Stack(workdir / "micropay-prod", mongodb_uri, extra_env=PRODUCTION).start()
    try:
        terminal = register_terminal(own)
        account = put_account(own)
        body = {
            "account_no": account["account_no"],
            "amount_fen": 4321,
            "auth_code": auth_code(own, "password_timeout"),
            "terminal_trade_no": "T-prod-1",
        }
        started = time.monotonic()
        answer = terminal_pay(own, terminal, body, timeout=120).json()
        took = time.monotonic() - started
        bound = 45 + 5 + 2 * float(own.env["WX_WECHAT_TIMEOUT"])
        print(f"unpaid payment code answered {answer['status']} after {took:.1f} s (bound {bound:.0f} s)")
        assert answer["status"] == "reversed", answer
        assert took <= bound + 2
        otn = answer["out_trade_no"]
        assert order_view(own, otn)["state"] == "REVOKED" and order(own, otn)["status"] == "reversed"
        created = order(own, otn)["created_at"]
        assert all((c["at"] - created).total_seconds() >= 15 for c in calls(own, otn, "reverse"))
        # the cashier scans again: a new payment, charged once; the first stays revoked
        again = terminal_pay(
            own, terminal, {**body, "auth_code": auth_code(own, "pay"), "terminal_trade_no": "T-prod-2"}, timeout=120
        ).json()
        assert again["status"] == "paid" and again["out_trade_no"] != otn
        assert order_view(own, otn)["state"] == "REVOKED"
        summary = own.sandbox_call("GET", "/sandbox/pay/summary").json()
        assert summary["total_fee"] == 4321 and summary["count"] == 1
    finally:
        own.stop()


def test_a_poll_window_wechat_cannot_honour_stops_the_start(workdir, mongodb_uri):
    (workdir / "micropay-bad").mkdir()
    own = Stack(workdir / "micropay-bad", mongodb_uri, extra_env={**PRODUCTION, "WX_PAY_POLL_WINDOW": "8"})
    out = run_script(own, "scripts.refund", "P0", "--amount-fen", "1", "--refund-no", "R0")
    assert out.returncode == 2 and "WX_PAY_POLL_WINDOW must be 15 to 45 s" in out.stderr
