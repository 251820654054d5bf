"""Payment codes at service-hall terminals: every sandbox behaviour, unknown outcomes, reversal,
the terminal's signature, replays and the idempotent terminal trade number."""

from __future__ import annotations

import uuid

import pytest
from conftest import error_of, put_account
from payments_support import (
    api_of,
    auth_code,
    balance,
    both_apis,
    calls,
    order,
    order_view,
    register_terminal,
    run_script,
    terminal_pay,
    wait_status,
)

stack = both_apis  # every test of this module runs over WeChat Pay v2 and v3

_TERMINALS: dict[str, tuple[str, str]] = {}


@pytest.fixture
def terminal(stack):
    """One registered terminal per stack."""
    if stack.db_name not in _TERMINALS:
        _TERMINALS[stack.db_name] = register_terminal(stack)
    return _TERMINALS[stack.db_name]


def pay(stack, terminal, behaviour: str, amount: int = 1234, **extra):
    account = put_account(stack)
    body = {
        "account_no": account["account_no"],
        "amount_fen": amount,
        "auth_code": auth_code(stack, behaviour),
        **extra,
    }
    resp = terminal_pay(stack, terminal, body)
    assert resp.status_code == 200, resp.text
    return account["account_no"], resp.json()


def test_pay_at_once(stack, terminal):
    account_no, answer = pay(stack, terminal, "pay")
    assert answer["status"] == "paid" and "reason" not in answer
    assert wait_status(stack, answer["out_trade_no"])["status"] == "credited"
    assert balance(stack, account_no) == 1234
    assert order(stack, answer["out_trade_no"])["terminal_id"] == terminal[0]


def test_password_then_pay_is_polled_until_paid(stack, terminal):
    account_no, answer = pay(stack, terminal, "password_then_pay")
    assert answer["status"] == "paid"
    assert len(calls(stack, answer["out_trade_no"], "orderquery")) >= 1
    assert not calls(stack, answer["out_trade_no"], "reverse")
    assert wait_status(stack, answer["out_trade_no"])["status"] == "credited"
    assert balance(stack, account_no) == 1234


def test_password_timeout_is_reversed_after_the_window(stack, terminal):
    account_no, answer = pay(stack, terminal, "password_timeout")
    assert answer["status"] == "reversed" and answer["reason"]
    reverses = calls(stack, answer["out_trade_no"], "reverse")
    assert reverses  # USERPAYING answers recall=Y until WeChat revokes it, then success
    first = min(c["at"] for c in reverses)
    created = order(stack, answer["out_trade_no"])["created_at"]
    assert (first - created).total_seconds() >= 15 * 0.2  # never within WeChat's 15 s (scaled)
    assert order_view(stack, answer["out_trade_no"])["state"] == "REVOKED"
    assert order(stack, answer["out_trade_no"])["status"] == "reversed"
    assert balance(stack, account_no) == 0


@pytest.mark.parametrize(
    ("behaviour", "reason"),
    [("insufficient", "余额不足，请更换付款方式"), ("card_not_supported", "不支持该银行卡，请更换付款方式")],
)
def test_a_declined_payer_fails_at_once_with_a_reason(stack, terminal, behaviour, reason):
    """NOTENOUGH / NOTSUPORTCARD: nothing was charged; the cashier hears it at once (no reverse,
    which WeChat would refuse within 15 s of the order anyway)."""
    account_no, answer = pay(stack, terminal, behaviour)
    assert answer == {**answer, "status": "failed", "reason": reason}
    assert order_view(stack, answer["out_trade_no"])["state"] == "PAYERROR"
    assert not calls(stack, answer["out_trade_no"], "reverse")
    assert balance(stack, account_no) == 0


def test_expired_code_fails_with_a_reason(stack, terminal):
    account_no, answer = pay(stack, terminal, "expired")
    assert answer["status"] == "failed" and answer["reason"] == "付款码已过期，请刷新后重试"
    assert not calls(stack, answer["out_trade_no"], "orderquery")
    assert balance(stack, account_no) == 0


def test_system_error_then_query_finds_it_paid(stack, terminal):
    stack.fault("micropay", "system_error")  # the code is charged, only the answer is lost
    account_no, answer = pay(stack, terminal, "pay")
    assert answer["status"] == "paid"
    system_error = {"v2": "SYSTEMERROR", "v3": '"code": "SYSTEM_ERROR"'}[api_of(stack)]  # v3: HTTP 500
    assert system_error in calls(stack, answer["out_trade_no"], "micropay")[0]["call"]["response_raw"]
    assert calls(stack, answer["out_trade_no"], "orderquery")
    assert wait_status(stack, answer["out_trade_no"])["status"] == "credited"
    assert balance(stack, account_no) == 1234


def test_timeout_then_query_until_the_charge_appears(stack, terminal):
    stack.fault("micropay", "timeout")  # the answer never comes; WeChat charges 4 s later
    account_no, answer = pay(stack, terminal, "pay")
    assert answer["status"] == "paid"
    assert calls(stack, answer["out_trade_no"], "micropay")[0]["outcome"] == "unavailable"
    assert wait_status(stack, answer["out_trade_no"])["status"] == "credited"
    assert balance(stack, account_no) == 1234


def test_auth_code_format_checked_before_wechat(stack, terminal):
    account = put_account(stack)
    for code in ("123", "191234567890123456", "13123456789012345a", 134567890123456789):
        resp = terminal_pay(
            stack, terminal, {"account_no": account["account_no"], "amount_fen": 100, "auth_code": code}
        )
        assert resp.status_code == 422, resp.text
        assert error_of(resp)["details"][0]["field"] == "auth_code"
    assert stack.db.payments.count_documents({"account_no": account["account_no"]}) == 0


def test_signature_replay_disabled_and_unknown_terminals_are_refused(stack, terminal):
    account = put_account(stack)
    body = {"account_no": account["account_no"], "amount_fen": 100, "auth_code": auth_code(stack, "pay")}
    wrong = terminal_pay(stack, (terminal[0], "not-the-secret"), body)
    assert wrong.status_code == 401 and error_of(wrong)["code"] == "signature_invalid"
    unknown = terminal_pay(stack, ("T_NOBODY", terminal[1]), body)
    assert unknown.status_code == 401 and error_of(unknown)["code"] == "terminal_unknown"
    nonce = uuid.uuid4().hex
    first = terminal_pay(stack, terminal, body, nonce=nonce)
    assert first.status_code == 200 and first.json()["status"] == "paid"
    replay = terminal_pay(stack, terminal, body, nonce=nonce)
    assert replay.status_code == 401 and error_of(replay)["code"] == "nonce_replayed"
    assert stack.db.payments.count_documents({"account_no": account["account_no"]}) == 1

    own = register_terminal(stack, "临时终端")
    assert run_script(stack, "scripts.terminals", "disable", own[0]).returncode == 0
    body["auth_code"] = auth_code(stack, "pay")
    disabled = terminal_pay(stack, own, body)
    assert disabled.status_code == 403 and error_of(disabled)["code"] == "terminal_disabled"
    assert run_script(stack, "scripts.terminals", "enable", own[0]).returncode == 0
    assert terminal_pay(stack, own, body).json()["status"] == "paid"
    listing = run_script(stack, "scripts.terminals", "list").stdout
    assert own[0] in listing and own[1] not in listing
    stored = stack.db.terminals.find_one({"terminal_id": own[0]})
    assert own[1] not in str(stored) and stored["secret_enc"].startswith("v1:")


def test_retry_with_the_same_terminal_trade_no_returns_the_same_outcome(stack, terminal):
    account = put_account(stack)
    body = {
        "account_no": account["account_no"],
        "amount_fen": 2500,
        "auth_code": auth_code(stack, "pay"),
        "terminal_trade_no": f"T{uuid.uuid4().hex[:16]}",
    }
    first = terminal_pay(stack, terminal, body).json()
    second = terminal_pay(stack, terminal, body).json()  # a fresh nonce: a retry, not a replay
    assert first["status"] == second["status"] == "paid"
    assert first["out_trade_no"] == second["out_trade_no"]
    assert len(calls(stack, first["out_trade_no"], "micropay")) == 1
    wait_status(stack, first["out_trade_no"])
    assert balance(stack, account["account_no"]) == 2500
    conflict = terminal_pay(stack, terminal, {**body, "amount_fen": 9999})
    assert conflict.status_code == 409 and error_of(conflict)["code"] == "terminal_trade_conflict"
