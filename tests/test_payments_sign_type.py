"""``WX_PAY_SIGN_TYPE``: a merchant set to HMAC-SHA256 signs every v2 call, the mini-program's
``paySign`` and reads WeChat's answers and notifications with it (the sandbox checks each
signature with the ``sign_type`` the request names, as WeChat does: tests/test_pay_protocol.py)."""

from __future__ import annotations

from conftest import Stack
from payments_support import confirm, customer, pay_jsapi, wait_status


def test_hmac_sha256_merchant_signs_everything_with_it(workdir, mongodb_uri):
    (workdir / "hmac").mkdir()
    own = Stack(workdir / "hmac", mongodb_uri, extra_env={"WX_PAY_SIGN_TYPE": "HMAC-SHA256"}).start()
    try:
        cust = customer(own)
        created = pay_jsapi(own, cust, 1888)
        assert created["pay_params"]["signType"] == "HMAC-SHA256"
        otn = created["out_trade_no"]
        view = own.sandbox_call("GET", "/sandbox/pay/orders", params={"out_trade_no": otn}).json()
        assert view["sign_type"] == "HMAC-SHA256"  # what unifiedorder was signed with
        confirm(own, created)  # WeChat notifies, signed HMAC-SHA256 like the order
        assert wait_status(own, otn, ("credited",))["status"] == "credited"
        calls = list(own.db.payment_events.find({"out_trade_no": otn, "kind": "call"}))
        assert calls and all(c["call"]["request"].get("sign_type") == "HMAC-SHA256" for c in calls)
    finally:
        own.stop()
