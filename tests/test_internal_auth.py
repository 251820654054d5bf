"""The marketing-system interface: signed requests only; replayed, expired or tampered ones do nothing."""

from __future__ import annotations

import json
import time
import uuid

from conftest import error_of, new_account_no, new_mobile


def account_body(**overrides) -> dict:
    return {
        "holder_name": "李娜",
        "phone": new_mobile(),
        "address": "河南省平顶山市郏县茨芭镇2号",
        "region": "郏县茨芭",
        "feeder": "郏县茨芭2号线",
        "customer_class": "低压非居民",
        "tariff": {"tou": True, "two_part": False, "max_demand": False},
        "capacity_kva": 100,
        **overrides,
    }


def raw_put(stack, path: str, body: bytes, headers: dict):
    return stack.api("PUT", path, data=body, headers={**headers, "Content-Type": "application/json"})


def test_signed_upsert_creates_then_updates(stack):
    no = new_account_no()
    body = account_body(balance_fen=-1250)
    resp = stack.internal("PUT", f"/internal/v1/accounts/{no}", json=body)
    assert resp.status_code == 201, resp.text
    out = resp.json()
    assert out["created"] is True
    assert out["account"]["holder_name"] == "*娜"
    assert out["account"]["phone"] == body["phone"][:3] + "****" + body["phone"][-4:]
    assert out["account"]["balance_fen"] == -1250

    resp = stack.internal("PUT", f"/internal/v1/accounts/{no}", json={**body, "capacity_kva": 200})
    assert resp.status_code == 200 and resp.json()["created"] is False
    stored = stack.db.accounts.find_one({"account_no": no})
    assert stored["capacity_kva"] == 200 and stored["bindings"] == []
    assert stack.db.accounts.count_documents({"account_no": no}) == 1


def test_replayed_request_is_refused_and_changes_nothing(stack):
    no, path = new_account_no(), None
    path = f"/internal/v1/accounts/{no}"
    body = json.dumps(account_body(), ensure_ascii=False).encode()
    headers = stack.signed_headers("PUT", path, body)
    assert raw_put(stack, path, body, headers).status_code == 201
    before = stack.db.accounts.find_one({"account_no": no})

    resp = raw_put(stack, path, body, headers)
    assert resp.status_code == 401 and error_of(resp)["code"] == "nonce_replayed"
    assert stack.db.accounts.find_one({"account_no": no}) == before

    # a different request reusing the nonce, freshly signed, is a replay too
    body2 = json.dumps(account_body(capacity_kva=999), ensure_ascii=False).encode()
    headers2 = stack.signed_headers("PUT", path, body2, nonce=headers["X-Nonce"])
    resp = raw_put(stack, path, body2, headers2)
    assert resp.status_code == 401 and error_of(resp)["code"] == "nonce_replayed"
    assert stack.db.accounts.find_one({"account_no": no})["capacity_kva"] == 100


def test_expired_or_future_timestamp_is_refused(stack):
    no = new_account_no()
    for ts in (int(time.time()) - 301, int(time.time()) + 301):
        resp = stack.internal("PUT", f"/internal/v1/accounts/{no}", json=account_body(), timestamp=ts)
        assert resp.status_code == 401, resp.text
        assert error_of(resp)["code"] == "signature_expired"
    assert stack.db.accounts.count_documents({"account_no": no}) == 0
    # just inside the window is fine
    resp = stack.internal("PUT", f"/internal/v1/accounts/{no}", json=account_body(), timestamp=int(time.time()) - 290)
    assert resp.status_code == 201


def test_tampered_body_wrong_secret_or_other_path_is_refused(stack):
    no, other = new_account_no(), new_account_no()
    path = f"/internal/v1/accounts/{no}"
    signed = json.dumps(account_body(), ensure_ascii=False).encode()
    tampered = json.dumps(account_body(holder_name="王强"), ensure_ascii=False).encode()

    resp = raw_put(stack, path, tampered, stack.signed_headers("PUT", path, signed))
    assert resp.status_code == 401 and error_of(resp)["code"] == "signature_invalid"

    resp = stack.internal("PUT", path, json=account_body(), secret="not-the-secret")
    assert resp.status_code == 401 and error_of(resp)["code"] == "signature_invalid"

    resp = raw_put(stack, f"/internal/v1/accounts/{other}", signed, stack.signed_headers("PUT", path, signed))
    assert resp.status_code == 401 and error_of(resp)["code"] == "signature_invalid"

    # signed as POST, sent as PUT
    resp = raw_put(stack, path, signed, stack.signed_headers("POST", path, signed))
    assert resp.status_code == 401 and error_of(resp)["code"] == "signature_invalid"

    # an uppercase signature is not the scheme's lowercase hex
    headers = stack.signed_headers("PUT", path, signed)
    headers["X-Signature"] = headers["X-Signature"].upper()
    resp = raw_put(stack, path, signed, headers)
    assert resp.status_code == 401 and error_of(resp)["code"] == "signature_invalid"

    assert stack.db.accounts.count_documents({"account_no": {"$in": [no, other]}}) == 0


def test_missing_or_malformed_headers(stack):
    path = f"/internal/v1/accounts/{new_account_no()}"
    resp = stack.api("PUT", path, json=account_body())
    assert resp.status_code == 401 and error_of(resp)["code"] == "signature_missing"
    body = json.dumps(account_body()).encode()
    for bad in ({"X-Nonce": "short"}, {"X-Nonce": "x" * 65}, {"X-Timestamp": "12.5"}, {"X-Signature": "签名"}):
        headers = stack.signed_headers("PUT", path, body)
        headers.update(bad)
        resp = stack.api(
            "PUT",
            path,
            data=body,
            headers={
                **{k: v.encode() if not v.isascii() else v for k, v in headers.items()},
                "Content-Type": "application/json",
            },
        )
        assert resp.status_code == 401, (bad, resp.text)
        assert error_of(resp)["code"] == "signature_invalid"


def test_a_forged_request_does_not_burn_the_nonce(stack):
    no = new_account_no()
    nonce = uuid.uuid4().hex
    resp = stack.internal("PUT", f"/internal/v1/accounts/{no}", json=account_body(), nonce=nonce, secret="forger")
    assert resp.status_code == 401
    resp = stack.internal("PUT", f"/internal/v1/accounts/{no}", json=account_body(), nonce=nonce)
    assert resp.status_code == 201, resp.text


def test_nonce_is_remembered_then_forgotten(stack):
    no = new_account_no()
    nonce = uuid.uuid4().hex
    assert stack.internal("PUT", f"/internal/v1/accounts/{no}", json=account_body(), nonce=nonce).status_code == 201
    record = stack.db.request_nonces.find_one({"nonce": nonce})
    assert record["scope"] == "internal"
    assert 590 <= (record["expires_at"] - record["created_at"]).total_seconds() <= 610
    # ten minutes later (set-up: the stored expiry moved into the past) the nonce may be used again
    stack.db.request_nonces.update_one({"_id": record["_id"]}, {"$set": {"expires_at": record["created_at"]}})
    assert stack.internal("PUT", f"/internal/v1/accounts/{no}", json=account_body(), nonce=nonce).status_code == 200


def test_validation_reports_every_field(stack):
    no = new_account_no()
    resp = stack.internal(
        "PUT",
        f"/internal/v1/accounts/{no}",
        json={
            "holder_name": " ",
            "phone": "12345",
            "customer_class": "居民",
            "tariff": {"tou": "yes"},
            "capacity_kva": -1,
            "balance_fen": 1.5,
            "colour": "red",
        },
    )
    assert resp.status_code == 422, resp.text
    err = error_of(resp)
    assert err["code"] == "validation_failed"
    fields = {d["field"] for d in err["details"]}
    assert fields >= {
        "holder_name",
        "phone",
        "address",
        "region",
        "feeder",
        "customer_class",
        "tariff.tou",
        "tariff.two_part",
        "tariff.max_demand",
        "capacity_kva",
        "balance_fen",
        "colour",
    }
    assert stack.db.accounts.count_documents({"account_no": no}) == 0

    resp = stack.internal("PUT", "/internal/v1/accounts/12345", json=account_body())
    assert resp.status_code == 422
    assert {d["field"] for d in error_of(resp)["details"]} == {"account_no"}


def test_internal_refuses_bearer_tokens(stack):
    token = stack.login()
    resp = stack.api("PUT", f"/internal/v1/accounts/{new_account_no()}", token=token, json=account_body())
    assert resp.status_code == 401 and error_of(resp)["code"] == "signature_missing"


def test_worked_example_of_the_docs():
    from wx_backend.security import request_signature

    assert (
        request_signature(
            "dev-internal-secret", "PUT", "/internal/v1/accounts/5263900001", "1767225600", "0123456789abcdef", b"{}"
        )
        == "e5778763833d70910108be7da302e78ee655af33f7ca751e56e7db8945d5bb0a"
    )
