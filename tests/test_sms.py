"""SMS verification codes: sending limits, tries, expiry, and nothing stored or logged in clear."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from conftest import error_of, new_mobile, put_account, skip_sms_interval, sms_limit_key


def send(stack, token, **body):
    return stack.api("POST", "/api/v1/sms-codes", token=token, json=body)


def test_code_is_texted_masked_and_stored_only_hashed(stack):
    token = stack.login()
    mobile = new_mobile()
    resp = send(stack, token, mobile=mobile, purpose="apply")
    assert resp.status_code == 201, resp.text
    assert resp.json() == {"sent_to": mobile[:3] + "****" + mobile[-4:], "expires_in": 300}
    texts = stack.sms_texts(mobile)
    assert len(texts) == 1
    assert re.fullmatch(r"【郏县供电】验证码 [0-9]{6}，5分钟内有效，用于办理用电业务。请勿泄露给他人。", texts[0])
    code = stack.last_sms_code(mobile)

    records = list(stack.db.sms_codes.find({"purpose": "apply"}))
    dump = str(records)
    assert mobile not in dump and mobile[-8:] not in dump
    assert not any(r.get("code") for r in records)
    assert code not in str(stack.db.sms_codes.find_one(sort=[("created_at", -1)]))
    logs = stack.logs()
    assert mobile not in logs and f"验证码 {code}" not in logs


def test_one_text_a_minute_and_five_a_day_per_mobile_and_user(stack):
    mobile = new_mobile()
    token = stack.login()
    assert send(stack, token, mobile=mobile, purpose="seal").status_code == 201
    resp = send(stack, token, mobile=mobile, purpose="login")  # same user, another purpose
    assert resp.status_code == 429
    err = error_of(resp)
    assert err["code"] == "too_many_requests" and 1 <= err["details"]["retry_after"] <= 60
    assert len(stack.sms_texts(mobile)) == 1

    for _ in range(4):
        skip_sms_interval(stack, mobile)
        assert send(stack, token, mobile=mobile, purpose="seal").status_code == 201
    skip_sms_interval(stack, mobile)
    resp = send(stack, token, mobile=mobile, purpose="seal")
    assert resp.status_code == 429 and "今日" in error_of(resp)["message"]
    assert len(stack.sms_texts(mobile)) == 5
    keys = list(stack.db.rate_limits.find({"_id": {"$regex": "^" + re.escape(sms_limit_key(mobile))}}))
    assert [k["count"] for k in keys] == [5]
    # another user has an allowance of their own for the same mobile, at once
    assert send(stack, stack.login(), mobile=mobile, purpose="login").status_code == 201
    assert len(stack.sms_texts(mobile)) == 6


def test_strangers_cannot_use_up_the_holders_codes(stack):
    """Another user asking for bind_account codes of an account again and again is refused after
    their own allowance; the holder's own requests still get codes the same day."""
    account = put_account(stack)
    stranger = stack.login()
    sent = 0
    for _ in range(10):
        resp = send(stack, stranger, purpose="bind_account", account_no=account["account_no"])
        if resp.status_code == 429:
            break
        assert resp.status_code == 201, resp.text
        sent += 1
        skip_sms_interval(stack, account["phone"])
    assert sent == 5 and resp.status_code == 429
    holder = stack.login()
    resp = send(stack, holder, purpose="bind_account", account_no=account["account_no"])
    assert resp.status_code == 201, resp.text
    code = stack.last_sms_code(account["phone"])
    resp = stack.api(
        "POST",
        "/api/v1/accounts",
        token=holder,
        json={"account_no": account["account_no"], "holder_name": account["holder_name"], "sms_code": code},
    )
    assert resp.status_code == 201, resp.text


def test_codes_to_other_peoples_mobiles_count_against_the_requester(stack):
    token = stack.login()
    own = new_mobile()
    # a mobile becomes the user's own once they prove a code sent to it
    account = put_account(stack, phone=own)
    assert send(stack, token, purpose="bind_account", account_no=account["account_no"]).status_code == 201
    resp = stack.api(
        "POST",
        "/api/v1/accounts",
        token=token,
        json={
            "account_no": account["account_no"],
            "holder_name": account["holder_name"],
            "sms_code": stack.last_sms_code(own),
        },
    )
    assert resp.status_code == 201
    key = "sms:others:" + stack.api("GET", "/api/v1/me", token=token).json()["user"]["id"]

    def counted() -> int:
        return (stack.db.rate_limits.find_one({"_id": key}) or {}).get("count", 0)

    before = counted()
    assert before == 1  # the binding code went to a mobile not yet proven
    skip_sms_interval(stack, own)
    assert send(stack, token, mobile=own, purpose="apply").status_code == 201
    assert counted() == before, "a code to one's own mobile is not counted as one to a stranger"
    assert send(stack, token, mobile=new_mobile(), purpose="apply").status_code == 201
    assert counted() == before + 1


def test_twenty_texts_an_hour_per_user(stack):
    token = stack.login()
    for _ in range(20):
        assert send(stack, token, mobile=new_mobile(), purpose="apply").status_code == 201
    mobile = new_mobile()
    resp = send(stack, token, mobile=mobile, purpose="apply")
    assert resp.status_code == 429 and error_of(resp)["code"] == "too_many_requests"
    assert stack.sms_texts(mobile) == []
    # the binding flow counts against the same allowance (so account numbers cannot be probed)
    resp = send(stack, token, purpose="bind_account", account_no="9999999999")
    assert resp.status_code == 429


def test_bad_input_and_no_login(stack):
    token = stack.login()
    for body, fields in (
        ({"mobile": "12345678901", "purpose": "apply"}, {"mobile"}),
        ({"mobile": "1391234567", "purpose": "apply"}, {"mobile"}),
        ({"mobile": new_mobile(), "purpose": "lottery"}, {"purpose"}),
        ({}, {"mobile", "purpose"}),
        ({"purpose": "bind_account", "account_no": "12ab"}, {"account_no"}),
    ):
        resp = send(stack, token, **body)
        assert resp.status_code == 422, resp.text
        assert {d["field"] for d in error_of(resp)["details"]} == fields
    resp = stack.api("POST", "/api/v1/sms-codes", json={"mobile": new_mobile(), "purpose": "apply"})
    assert resp.status_code == 401


def test_provider_failure_is_503_and_leaves_no_usable_code(stack):
    mobile = new_mobile()
    stack.fault("sms", "system_error")
    resp = send(stack, stack.login(), mobile=mobile, purpose="apply")
    assert resp.status_code == 503 and error_of(resp)["code"] == "sms_unavailable"
    assert stack.sms_texts(mobile) == []


# -- checking codes, through account binding (the code is proven by POST /accounts) ----------


def bind(stack, token, account, code, name=None):
    return stack.api(
        "POST",
        "/api/v1/accounts",
        token=token,
        json={"account_no": account["account_no"], "holder_name": name or account["holder_name"], "sms_code": code},
    )


def request_bind_code(stack, token, account) -> str:
    resp = send(stack, token, purpose="bind_account", account_no=account["account_no"])
    assert resp.status_code == 201, resp.text
    return stack.last_sms_code(account["phone"])


def wrong(code: str) -> str:
    return f"{(int(code) + 1) % 10**6:06d}"


def test_five_tries_then_the_code_is_exhausted(stack):
    account = put_account(stack)
    token = stack.login()
    code = request_bind_code(stack, token, account)
    for left in (4, 3, 2, 1):
        resp = bind(stack, token, account, wrong(code))
        err = error_of(resp)
        assert resp.status_code == 400 and err["code"] == "sms_code_invalid", resp.text
        assert err["details"]["tries_left"] == left
    resp = bind(stack, token, account, wrong(code))
    assert error_of(resp)["code"] == "sms_code_exhausted"
    resp = bind(stack, token, account, code)  # even the right code is now refused
    assert resp.status_code == 400 and error_of(resp)["code"] == "sms_code_exhausted"
    assert stack.db.accounts.find_one({"account_no": account["account_no"]})["bindings"] == []
    # a new code starts afresh
    skip_sms_interval(stack, account["phone"])
    assert bind(stack, token, account, request_bind_code(stack, token, account)).status_code == 201


def test_expired_code_is_refused(stack):
    account = put_account(stack)
    token = stack.login()
    code = request_bind_code(stack, token, account)
    past = datetime.now(UTC) - timedelta(seconds=1)
    stack.db.sms_codes.update_many(
        {"purpose": "bind_account", "expires_at": {"$gt": past}}, {"$set": {"expires_at": past}}
    )
    resp = bind(stack, token, account, code)
    assert resp.status_code == 400 and error_of(resp)["code"] == "sms_code_expired"
    assert stack.db.accounts.find_one({"account_no": account["account_no"]})["bindings"] == []


def test_a_code_works_once_and_a_newer_code_replaces_the_older(stack):
    account = put_account(stack)
    token = stack.login()
    first = request_bind_code(stack, token, account)
    skip_sms_interval(stack, account["phone"])
    second = request_bind_code(stack, token, account)
    if first != second:
        resp = bind(stack, token, account, first)
        assert resp.status_code == 400 and error_of(resp)["code"] == "sms_code_invalid"
    assert bind(stack, token, account, second).status_code == 201
    assert stack.api("DELETE", f"/api/v1/accounts/{account['account_no']}", token=token).status_code == 204
    resp = bind(stack, token, account, second)
    assert resp.status_code == 400 and error_of(resp)["code"] == "sms_code_invalid"


def test_a_code_for_one_purpose_does_not_serve_another(stack):
    account = put_account(stack)
    token = stack.login()
    assert send(stack, token, mobile=account["phone"], purpose="apply").status_code == 201
    resp = bind(stack, token, account, stack.last_sms_code(account["phone"]))
    assert resp.status_code == 400 and error_of(resp)["code"] == "sms_code_invalid"
