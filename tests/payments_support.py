"""Helpers for the payments tests: customers with bound accounts, bills, terminals, notifications."""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from conftest import bind_account, put_account
from cryptography.hazmat.primitives.asymmetric import rsa
from pay_support import auth_code, order_view
from pay_v3_support import Notification, api_of, notification_v3
from waits import wait_until

from wx_backend.embedded import ROOT
from wx_backend.wechat.pay import pay_sign

__all__ = ["api_of", "auth_code", "order_view"]

FINAL = ("credited", "closed", "failed", "reversed")


def customer(stack, balance_fen: int = 0) -> dict:
    """A logged-in customer with one bound account: ``{"token", "openid", "account_no"}``."""
    openid = f"o_{uuid.uuid4().hex[:20]}"
    token = stack.login(openid)
    account = put_account(stack, balance_fen=balance_fen)
    bind_account(stack, token, account)
    return {"token": token, "openid": openid, "account_no": account["account_no"]}


def months_ago(n: int) -> str:
    """The period ``n`` months before this one (Beijing time): payments settle the bills of the
    last 36 months, so the tests' bills move with the calendar."""
    now = datetime.now(ZoneInfo("Asia/Shanghai"))
    total = now.year * 12 + now.month - 1 - n
    return f"{total // 12:04d}-{total % 12 + 1:02d}"


AGO_1, AGO_2, AGO_3, AGO_4, AGO_5, AGO_6, AGO_7, AGO_8 = (months_ago(n) for n in range(1, 9))


def add_bill(stack, account_no: str, period: str, amount_fen: int) -> None:
    """An issued, unpaid bill, sent as the marketing system sends it."""
    body = {
        "amount_fen": amount_fen,
        "due_date": f"{period}-25",
        "readings": {"previous": 1000, "current": 1100},
        "kwh": {"total": 100},
        "prices": {"flat": 5600},
    }
    resp = stack.internal("PUT", f"/internal/v1/accounts/{account_no}/bills/{period}", json=body)
    assert resp.status_code in (200, 201), resp.text


def bills(stack, account_no: str) -> dict[str, dict]:
    return {b["period"]: b for b in stack.db.bills.find({"account_no": account_no})}


def balance(stack, account_no: str) -> int:
    return stack.db.accounts.find_one({"account_no": account_no})["balance_fen"]


def pay_jsapi(stack, cust: dict, amount_fen: int) -> dict:
    resp = stack.api(
        "POST",
        "/api/v1/payments",
        token=cust["token"],
        json={"account_no": cust["account_no"], "amount_fen": amount_fen},
    )
    assert resp.status_code == 201, resp.text
    return resp.json()


def prepay_id(created: dict) -> str:
    return created["pay_params"]["package"].removeprefix("prepay_id=")


def confirm(stack, created: dict) -> dict:
    resp = stack.sandbox_call("POST", "/sandbox/pay/confirm", json={"prepay_id": prepay_id(created)})
    assert resp.status_code == 200, resp.text
    return resp.json()


def order(stack, out_trade_no: str) -> dict:
    return stack.db.payments.find_one({"out_trade_no": out_trade_no})


def wait_status(stack, out_trade_no: str, statuses=FINAL, timeout: float = 60.0) -> dict:
    return wait_until(lambda: (o := order(stack, out_trade_no)) and o["status"] in statuses and o, timeout=timeout)


def calls(stack, out_trade_no: str, operation: str | None = None) -> list[dict]:
    query = {"out_trade_no": out_trade_no, "kind": "call"}
    if operation:
        query["operation"] = operation
    return list(stack.db.payment_events.find(query))


@pytest.fixture(params=["v2", "v3"])
def both_apis(request):
    """The test's stack: the session's (v2), then one whose backend uses WeChat Pay v3.
    Made a test module's ``stack``, it runs the module's tests over both APIs."""
    return request.getfixturevalue("session_stack" if request.param == "v2" else "stack_v3")


def notification_xml(
    stack,
    out_trade_no: str,
    total_fee: int,
    *,
    openid: str = "o_x",
    transaction_id: str | None = None,
    mch_id: str | None = None,
    key: str | None = None,
    time_end: str | None = None,
) -> bytes:
    """A payment notification as WeChat sends it (A.10), signed with the test key; in the
    stack's API (v3: a ``Notification`` with its signed headers; ``key`` then means "signed
    with another key")."""
    if api_of(stack) == "v3":
        other = rsa.generate_private_key(public_exponent=65537, key_size=2048) if key else None
        return notification_v3(
            stack,
            out_trade_no,
            total_fee,
            openid=openid,
            transaction_id=transaction_id,
            mch_id=mch_id,
            signing_key=other,
            time_end=time_end,
        )
    fields = {
        "appid": stack.env["WX_MP_APPID"],
        "mch_id": mch_id or stack.env["WX_PAY_MCH_ID"],
        "nonce_str": secrets.token_hex(16),
        "result_code": "SUCCESS",
        "return_code": "SUCCESS",
        "openid": openid,
        "is_subscribe": "N",
        "trade_type": "JSAPI",
        "bank_type": "OTHERS",
        "total_fee": str(total_fee),
        "fee_type": "CNY",
        "cash_fee": str(total_fee),
        "transaction_id": transaction_id or "4200" + "".join(secrets.choice("0123456789") for _ in range(24)),
        "out_trade_no": out_trade_no,
        "time_end": time_end or datetime.now(ZoneInfo("Asia/Shanghai")).strftime("%Y%m%d%H%M%S"),
    }
    fields["sign"] = pay_sign(fields, key or stack.env["WX_PAY_API_KEY"])
    return ("<xml>" + "".join(f"<{k}><![CDATA[{v}]]></{k}>" for k, v in fields.items()) + "</xml>").encode()


def notify(stack, body: bytes):
    """Deliver a notification to the stack's backend, at the notify URL of its API."""
    if isinstance(body, Notification):
        return stack.api("POST", "/wechat/pay/notify/v3", data=bytes(body), headers=dict(body.headers))
    return stack.api("POST", "/wechat/pay/notify", data=body, headers={"Content-Type": "text/xml"})


def replied_success(resp) -> bool:
    """WeChat takes the notification as received (v2: SUCCESS in XML; v3: 204 or 200)."""
    if resp.request.path_url.endswith("/v3"):
        return resp.status_code in (200, 204)
    return resp.status_code == 200 and "<return_code><![CDATA[SUCCESS]]></return_code>" in resp.text


def replied_fail(resp) -> bool:
    """WeChat is asked to send it again (v2: FAIL in XML; v3: 400, which WeChat retries)."""
    if resp.request.path_url.endswith("/v3"):
        return resp.status_code == 400 and resp.json()["error"]["code"] == "wechat_pay_notification_refused"
    return resp.status_code == 200 and "<return_code><![CDATA[FAIL]]></return_code>" in resp.text


def run_script(stack, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=ROOT,
        env={**stack.env, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


def register_terminal(stack, name: str = "城关营业厅 1号机") -> tuple[str, str]:
    out = run_script(stack, "scripts.terminals", "register", name)
    assert out.returncode == 0, out.stderr
    terminal_id = re.search(r"terminal_id (\S+)", out.stdout).group(1)
    secret = re.search(r"secret (\S+)", out.stdout).group(1)
    return terminal_id, secret


def terminal_pay(stack, terminal: tuple[str, str], body: dict, nonce: str | None = None, timeout: float = 60):
    terminal_id, secret = terminal
    path = "/api/v1/terminal/payments"
    raw = json.dumps(body, ensure_ascii=False).encode()
    headers = stack.signed_headers("POST", path, raw, secret=secret, nonce=nonce)
    headers.update({"X-Terminal-Id": terminal_id, "Content-Type": "application/json"})
    return stack.api("POST", path, data=raw, headers=headers, timeout=timeout)


def expire(stack, out_trade_no: str) -> None:
    """Set-up: move an order's expiry (and its next look) into the past."""
    past = datetime.now(UTC) - timedelta(seconds=1)
    stack.db.payments.update_one({"out_trade_no": out_trade_no}, {"$set": {"expires_at": past, "next_check_at": past}})
