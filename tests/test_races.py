"""Money and state changes whatever the timing: crediting while every step is slowed beyond any
lease the code once relied on, and conflicting transitions raced against each other."""

from __future__ import annotations

import json
import random
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest
import requests
from application_support import advance
from conftest import Stack, error_of, put_account
from contract_support import apply_seal, create_application, issue_contract, seal_sms_code, user_id_of
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
)
from waits import wait_until

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
            resp = requests.post(
                base + "/api/v1/payments",
                json={"account_no": no, "amount_fen": amounts[i]},
                headers={"Authorization": f"Bearer {person['token']}"},
                timeout=60,
            )
            assert resp.status_code == 201, resp.text
            created = resp.json()
            paid = stack.sandbox_call("POST", "/sandbox/pay/confirm", json={"prepay_id": prepay_id(created)})
            assert paid.status_code == 200, paid.text
            body = notification_xml(
                stack, created["out_trade_no"], amounts[i], transaction_id=paid.json()["transaction_id"]
            )
            for target in bases + bases:
                answer = requests.post(
                    target + "/wechat/pay/notify", data=body, headers={"Content-Type": "text/xml"}, timeout=60
                )
                with lock:
                    outcomes[f"notify_{answer.status_code}"] += 1
            otn = created["out_trade_no"]
        else:  # a payment code at a terminal
            raw = json.dumps(
                {
                    "account_no": no,
                    "amount_fen": amounts[i],
                    "auth_code": auth_code(stack, "pay"),
                    "terminal_trade_no": f"S{i}x{rng.randint(0, 10**9)}",
                }
            ).encode()
            path = "/api/v1/terminal/payments"
            headers = stack.signed_headers("POST", path, raw, secret=terminal[1])
            headers.update({"X-Terminal-Id": terminal[0], "Content-Type": "application/json"})
            # the cashier's answer waits for crediting, paused three times here
            resp = requests.post(base + path, data=raw, headers=headers, timeout=600)
            assert resp.status_code == 200, resp.text
            assert resp.json()["status"] == "paid", resp.text
            otn = resp.json()["out_trade_no"]
        with lock:
            made.append(otn)

    try:
        with ThreadPoolExecutor(25) as pool:
            for future in [pool.submit(one, i) for i in range(50)]:
                future.result()
        wait_until(
            lambda: stack.db.payment_credits.count_documents({"_id": {"$in": made}, "state": "done"}) == 50,
            timeout=600,
            step=1,
        )
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


# -- conflicting transitions, raced ------------------------------------------------------------
ROUNDS = 10


def race(*calls):
    """Start every call at once (threads released together); their responses, in order."""
    barrier = threading.Barrier(len(calls))

    def go(call):
        barrier.wait()
        return call()

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(go, calls))


def test_accept_versus_cancel_one_wins(stack):
    token = stack.login()
    outcomes: Counter = Counter()
    for _ in range(ROUNDS):
        app_no = create_application(stack, token, stage="submitted")
        cancel, accept = race(
            lambda app_no=app_no: stack.api("POST", f"/api/v1/applications/{app_no}/cancel", token=token),
            lambda app_no=app_no: advance(stack, app_no, "accepted"),
        )
        codes = (cancel.status_code, accept.status_code)
        assert sorted(codes) == [200, 409], (cancel.text, accept.text)
        loser = cancel if cancel.status_code == 409 else accept
        assert error_of(loser)["code"] in ("cannot_cancel", "invalid_stage_transition")
        doc = stack.db.applications.find_one({"app_no": app_no})
        assert doc["stage"] == ("cancelled" if cancel.status_code == 200 else "accepted")
        assert [h["stage"] for h in doc["history"]] == ["submitted", doc["stage"]]
        outcomes[doc["stage"]] += 1
    print("accept vs cancel:", dict(outcomes))


def test_confirm_versus_confirm_signs_once(stack):
    for _ in range(ROUNDS):
        _confirm_versus_confirm_signs_once_round(stack)


def _previewed_contract(stack) -> tuple[str, str, dict, str]:
    """A fresh customer's issued contract with a seal and a preview: ``(token, contract_no, seal, preview_id)``."""
    token = stack.login()
    no = issue_contract(stack, create_application(stack, token))["contract_no"]
    seal = apply_seal(stack, token, org_name="郏县惠源纺织有限公司")
    preview = stack.api(
        "POST",
        f"/api/v1/contracts/{no}/preview",
        token=token,
        json={"seal_id": seal["seal_id"], "signature": {"type": "typed", "name": "王立新"}},
    )
    assert preview.status_code == 201, preview.text
    return token, no, seal, preview.json()["preview"]["preview_id"]


def _confirm_versus_confirm_signs_once_round(stack):
    token, no, _seal, pid = _previewed_contract(stack)
    answers = race(
        *[lambda: stack.api("POST", f"/api/v1/contracts/{no}/confirm", token=token, json={"preview_id": pid})] * 2
    )
    assert sorted(a.status_code for a in answers) == [200, 409], [a.text for a in answers]
    loser = next(a for a in answers if a.status_code == 409)
    assert error_of(loser)["code"] in ("contract_signing_in_progress", "contract_already_signed")
    doc = stack.db.contracts.find_one({"_id": no})
    assert doc["status"] == "effective" and [s["role"] for s in doc["signatures"]] == ["customer", "supplier"]
    # the draft and the signed file, whose first bytes are the customer-sealed revision: the
    # loser stored nothing
    assert stack.db["files.files"].count_documents({"filename": f"{no}.pdf"}) == 2
    assert stack.db["files.files"].count_documents({"filename": f"{no}-customer.pdf"}) == 0
    assert doc["files"]["customer_signed"]["file_id"] == doc["files"]["signed"]["file_id"]


def test_revoke_versus_sign_never_signs_with_a_revoked_seal(stack):
    """Even rounds start both at once; odd rounds revoke once the signing holds the seal."""
    outcomes = Counter(_revoke_versus_sign_round(stack, i % 2 == 1) for i in range(ROUNDS))
    print("revoke vs sign:", dict(outcomes))
    assert outcomes["signed_revoke_refused"] >= ROUNDS // 2


def _revoke_versus_sign_round(stack, during_signing: bool) -> str:
    token, no, seal, pid = _previewed_contract(stack)
    code = seal_sms_code(stack, token, seal["_mobile"])

    def revoke_call():
        if during_signing:
            wait_until(
                lambda: stack.db.seals.find_one({"cert_serial": seal["cert_serial"]}).get("signing"),
                timeout=60,
                step=0.01,
            )
        return stack.api(
            "DELETE",
            f"/api/v1/seals/{seal['seal_id']}",
            token=token,
            json={"mobile": seal["_mobile"], "sms_code": code},
        )

    sign, revoke = race(
        lambda: stack.api("POST", f"/api/v1/contracts/{no}/confirm", token=token, json={"preview_id": pid}), revoke_call
    )
    doc = stack.db.contracts.find_one({"_id": no})
    seal_doc = stack.db.seals.find_one({"cert_serial": seal["cert_serial"]})
    if sign.status_code == 200:
        assert doc["status"] == "effective"
        if revoke.status_code == 200:  # the revocation came after the signing was over
            assert seal_doc["revoked_at"] >= doc["signed_at"]
            outcome = "signed_then_revoked"
        else:
            assert revoke.status_code == 409 and error_of(revoke)["code"] == "seal_in_use", revoke.text
            assert seal_doc["status"] == "active"
            outcome = "signed_revoke_refused"
    else:
        assert sign.status_code == 409 and error_of(sign)["code"] == "seal_revoked", sign.text
        assert revoke.status_code == 200 and seal_doc["status"] == "revoked"
        assert doc["status"] == "pending" and doc["signatures"] == []
        outcome = "revoked_sign_refused"
    assert not seal_doc.get("signing")  # nothing left held
    return outcome


def test_bind_ninth_versus_tenth_binds_one(stack):
    for _ in range(ROUNDS):
        _bind_ninth_versus_tenth_binds_one_round(stack)


def _bind_ninth_versus_tenth_binds_one_round(stack):
    token = stack.login()
    uid = user_id_of(stack, token)
    for _ in range(8):  # set-up: eight bindings as binding leaves them
        held = put_account(stack)
        stack.db.accounts.update_one(
            {"_id": held["account_no"]},
            {"$push": {"bindings": {"user_id": uid, "role": "holder", "bound_at": datetime.now(UTC)}}},
        )
    stack.db.binding_quota.insert_one({"_id": uid, "count": 8, "rev": 1, "changed_at": datetime.now(UTC)})
    ninth, tenth = put_account(stack), put_account(stack)
    bodies = []
    for account in (ninth, tenth):
        sent = stack.api(
            "POST",
            "/api/v1/sms-codes",
            token=token,
            json={"purpose": "bind_account", "account_no": account["account_no"]},
        )
        assert sent.status_code == 201, sent.text
        bodies.append(
            {
                "account_no": account["account_no"],
                "holder_name": account["holder_name"],
                "sms_code": stack.last_sms_code(account["phone"]),
            }
        )
    answers = race(
        *[lambda body=body: stack.api("POST", "/api/v1/accounts", token=token, json=body) for body in bodies]
    )
    assert sorted(a.status_code for a in answers) == [201, 409], [a.text for a in answers]
    loser = next(a for a in answers if a.status_code == 409)
    assert error_of(loser)["code"] == "too_many_accounts"
    assert stack.db.accounts.count_documents({"bindings.user_id": uid}) == 9
    assert stack.db.binding_quota.find_one({"_id": uid})["count"] == 9


def test_one_sms_code_tried_five_ways_binds_once(stack):
    for _ in range(ROUNDS):
        _one_sms_code_tried_five_ways_binds_once_round(stack)


def _one_sms_code_tried_five_ways_binds_once_round(stack):
    account = put_account(stack)
    tokens = [stack.login() for _ in range(5)]
    sent = stack.api(
        "POST",
        "/api/v1/sms-codes",
        token=tokens[0],
        json={"purpose": "bind_account", "account_no": account["account_no"]},
    )
    assert sent.status_code == 201, sent.text
    body = {
        "account_no": account["account_no"],
        "holder_name": account["holder_name"],
        "sms_code": stack.last_sms_code(account["phone"]),
    }
    answers = race(*[lambda t=t: stack.api("POST", "/api/v1/accounts", token=t, json=body) for t in tokens])
    assert sorted(a.status_code for a in answers) == [201, 400, 400, 400, 400], [a.text for a in answers]
    assert {error_of(a)["code"] for a in answers if a.status_code == 400} == {"sms_code_invalid"}
    doc = stack.db.accounts.find_one({"_id": account["account_no"]})
    assert len(doc["bindings"]) == 1
