"""Security sweep over every operation of the OpenAPI document (a new endpoint is covered by
being documented, and the document test makes sure it is).

User A owns a bound account, an upload, an application, a payment, a bill, an invoice title
and an invoice request; user B and
anonymous callers try every operation with A's identifiers in every path and query
parameter. Expected: declared auth enforced (no token, no or a wrong signature -> 401),
B gets 404 for each of A's objects and never sees one of A's identifiers, and A's objects
are unchanged afterwards. A's own views show the phone and ID number masked only. The logs
of the whole session are checked for secrets by ``_no_secrets_in_logs`` in conftest.
"""

from __future__ import annotations

import json
import re
import uuid

import pytest
from application_support import submitted
from bson import ObjectId
from catalog_samples import resident_id
from conftest import SECRETS, bind_account, error_of, new_mobile, put_account, secrets_in_logs
from contract_support import apply_seal, create_application, issue_contract
from payments_support import confirm, pay_jsapi, register_terminal, wait_status
from query_support import flat_bill, put_bill

from handlers.openapi import document

PERIOD = "2026-10"
CUSTOMER_401 = {"unauthorized", "invalid_token"}
SIGNATURE_401 = {"signature_missing", "signature_invalid", "signature_expired", "terminal_unknown"}


def operations():
    for path, item in document()["paths"].items():
        for method, op in item.items():
            schemes = [name for requirement in op["security"] for name in requirement]
            yield path, method.upper(), op, schemes, {} in op["security"] or not schemes


def fill(path: str, values: dict[str, str]) -> tuple[str, set[str]]:
    """``path`` with each parameter replaced by A's value; the names that were A's objects."""
    owned = set()

    def one(match):
        name = match.group(1)
        if name in values:
            owned.add(name)
            return values[name]
        return "x0"

    return re.sub(r"\{([^}]+)\}", one, path), owned


@pytest.fixture(scope="module")
def world(stack):
    a_token, b_token = stack.login(), stack.login()
    meter_no = f"43{uuid.uuid4().int % 10**20:020d}"
    account = put_account(stack, meter_no=meter_no)
    bind_account(stack, a_token, account)
    # A's verified mobile, a remark, and a candidate of A's own lookup
    a_mobile = new_mobile()
    code = stack.sandbox_call("POST", "/sandbox/mp/phone-code", json={"phone": a_mobile}).json()["code"]
    assert stack.api("POST", "/api/v1/me/phone", token=a_token, json={"code": code}).status_code == 200
    resp = stack.api(
        "PATCH",
        f"/api/v1/accounts/{account['account_no']}/preferences",
        token=a_token,
        json={"remark": "家", "default": True},
    )
    assert resp.status_code == 200, resp.text
    resp = stack.api("GET", f"/api/v1/accounts/by-meter/{meter_no}", token=a_token)
    assert resp.status_code == 200, resp.text
    candidate_id = resp.json()["candidate"]["candidate_id"]
    b_account = put_account(stack)
    bind_account(stack, b_token, b_account)
    put_bill(stack, account["account_no"], PERIOD, flat_bill(200, 5600, due="2026-11-25"))
    created, body = submitted(stack, a_token, "other")
    app_no = created["app_no"]
    resp = stack.api(
        "POST", "/api/v1/payments", token=a_token, json={"account_no": account["account_no"], "amount_fen": 100}
    )
    assert resp.status_code == 201, resp.text
    out_trade_no = resp.json()["out_trade_no"]
    file_id = next(f for files in body["attachments"].values() for f in files)
    seal = apply_seal(stack, a_token)
    contract = issue_contract(stack, create_application(stack, a_token, account["account_no"]))
    resp = stack.api(
        "POST",
        f"/api/v1/contracts/{contract['contract_no']}/preview",
        token=a_token,
        json={"seal_id": seal["seal_id"], "signature": {"type": "typed", "name": "王立新"}},
    )
    assert resp.status_code == 201, resp.text
    preview_id = resp.json()["preview"]["preview_id"]
    # an invoice title and the invoice request of a second, credited payment
    title = stack.api("POST", "/api/v1/invoice-titles", token=a_token, json={"kind": "personal", "name": "王立新"})
    assert title.status_code == 201, title.text
    title_id = title.json()["title"]["title_id"]
    credited = pay_jsapi(stack, {"token": a_token, "account_no": account["account_no"]}, 200)
    confirm(stack, credited)
    wait_status(stack, credited["out_trade_no"], ("credited",))
    resp = stack.api(
        "POST", f"/api/v1/payments/{credited['out_trade_no']}/invoice", token=a_token, json={"title_id": title_id}
    )
    assert resp.status_code == 201, resp.text
    values = {
        "account_no": account["account_no"],
        "app_no": app_no,
        "file_id": file_id,
        "out_trade_no": out_trade_no,
        "period": PERIOD,
        "seal_id": seal["seal_id"],
        "contract_no": contract["contract_no"],
        "preview_id": preview_id,
        "title_id": title_id,
        "invoice_id": resp.json()["invoice"]["invoice_id"],
        "meter_no": meter_no,
        "candidate_id": candidate_id,
    }
    return {
        "a": a_token,
        "b": b_token,
        "account": account,
        "values": values,
        "body": body,
        "a_mobile": a_mobile,
        "terminal": register_terminal(stack, "安全巡检终端"),
    }


def snapshot(stack, values: dict[str, str]) -> dict:
    """A's objects as stored (fields that any write would change)."""
    account = stack.db.accounts.find_one({"account_no": values["account_no"]}, {"_id": 0})
    app = stack.db.applications.find_one({"app_no": values["app_no"]}, {"_id": 0})
    payment = stack.db.payments.find_one({"out_trade_no": values["out_trade_no"]}, {"_id": 0})
    bill = stack.db.bills.find_one({"account_no": values["account_no"], "period": PERIOD}, {"_id": 0})
    contract = stack.db.contracts.find_one({"contract_no": values["contract_no"]}, {"_id": 0})
    seal = stack.db.seals.find_one({"_id": ObjectId(values["seal_id"])})
    a_id = account["bindings"][0]["user_id"]
    invoice = stack.db.invoices.find_one({"_id": values["invoice_id"]})
    title = stack.db.invoice_titles.find_one({"_id": ObjectId(values["title_id"])})
    return json.loads(
        json.dumps(
            {
                "account": account,
                "bindings": account["bindings"],
                "app": {k: app.get(k) for k in ("stage", "status", "history", "user_id", "updated_at")},
                "payment": {k: payment.get(k) for k in ("status", "user_id", "amount_fen")},
                "bill": bill,
                "contract": contract,
                "seal": {k: seal.get(k) for k in ("status", "user_id", "revoked_at")},
                "phone": stack.db.verified_phones.find_one({"_id": a_id}),
                "preferences": stack.db.binding_preferences.find_one({"_id": a_id}),
                "candidate": stack.db.account_candidates.find_one({"_id": values["candidate_id"]}),
                "invoice": invoice,
                "title": title,
            },
            default=str,
        )
    )


def query_for(op: dict, values: dict[str, str]) -> dict[str, str]:
    return {
        p["name"]: values[p["name"]] for p in op.get("parameters", []) if p["in"] == "query" and p["name"] in values
    }


def body_for(op: dict, values: dict[str, str]) -> dict | None:
    content = op.get("requestBody", {}).get("content", {})
    schema = content.get("application/json", {}).get("schema")
    if not schema:
        return None
    props = schema.get("properties", {})
    return {name: values[name] for name in props if name in values}


def test_every_operation_refuses_callers_without_its_auth(stack, world):
    before = snapshot(stack, world["values"])
    checked = 0
    for path, method, op, schemes, public in operations():
        url, _ = fill(path, world["values"])
        params = query_for(op, world["values"])
        body = body_for(op, world["values"])
        kwargs = {"params": params}
        if body is not None:
            kwargs["json"] = body
        if "bearerAuth" in schemes:
            for token in (None, "not-a-token", uuid.uuid4().hex * 2):
                resp = stack.api(method, url, token=token, **kwargs)
                if public and resp.status_code != 401:
                    continue  # optional login: only what needs it answers 401
                assert resp.status_code == 401, (method, path, token, resp.text)
                assert error_of(resp)["code"] in CUSTOMER_401
                checked += 1
        if "internalHmac" in schemes or "terminalHmac" in schemes:
            raw = json.dumps(body or {}).encode()
            variants = [
                {},
                stack.signed_headers(method, url, raw, secret="wrong-secret"),
                stack.signed_headers(method, url, raw, timestamp=1_000_000_000),
                {**stack.signed_headers(method, url, raw), "X-Signature": "0" * 64},
            ]
            if "terminalHmac" in schemes:
                terminal_id, secret = world["terminal"]
                variants = [{**v, "X-Terminal-Id": terminal_id} for v in variants]
                # the internal secret is not a terminal's
                variants.append({**stack.signed_headers(method, url, raw), "X-Terminal-Id": terminal_id})
                variants.append(stack.signed_headers(method, url, raw, secret=secret))  # no terminal id
            for headers in variants:
                resp = stack.api(
                    method, url, data=raw, params=params, headers={**headers, "Content-Type": "application/json"}
                )
                assert resp.status_code == 401, (method, path, headers, resp.text)
                assert error_of(resp)["code"] in SIGNATURE_401
                checked += 1
            # a customer's token is no signature
            resp = stack.api(method, url, token=world["a"], data=raw, headers={"Content-Type": "application/json"})
            assert resp.status_code == 401, (method, path, resp.text)
            checked += 1
    assert checked > 100
    assert snapshot(stack, world["values"]) == before


def test_another_user_reaches_none_of_a_s_objects(stack, world):
    values = world["values"]
    before = snapshot(stack, values)
    a_ids = set(values.values()) - {PERIOD}
    tried = 0
    for path, method, op, schemes, _public in operations():
        if "bearerAuth" not in schemes:
            continue
        if (path, method) == ("/api/v1/session", "DELETE"):
            continue  # ends B's own session, reaches nothing of A's
        url, owned = fill(path, values)
        missing = set(re.findall(r"\{([^}]+)\}", path)) - set(values) - {"code"}
        assert not missing, f"{method} {path}: give the sweep an object of A's for {missing}"
        kwargs = {"params": query_for(op, values)}
        body = body_for(op, {**values, "amount_fen": 100})
        if body is not None:
            kwargs["json"] = body
        resp = stack.api(method, url, token=world["b"], **kwargs)
        tried += 1
        if (path, method) == ("/api/v1/accounts/by-meter/{meter_no}", "GET"):
            # whoever holds the meter's barcode may look it up, by design: masked, under B's own candidate
            assert resp.status_code == 200 and resp.json()["candidate"]["candidate_id"] != values["candidate_id"]
        elif owned or (path, method) == ("/api/v1/payments", "POST"):
            assert resp.status_code == 404, (method, path, resp.status_code, resp.text)
            error_of(resp)
        leaked = {i for i in a_ids if i in resp.text}
        if (path, method) == ("/api/v1/sms-codes", "POST"):
            leaked -= {values["account_no"]}  # a binding code goes to the account's phone, by design
        assert not leaked, (method, path, leaked, resp.text[:300])
        # B's own lists never show A's objects
        assert not any(s in resp.text for s in SECRETS if len(s) == 11 and s == world["account"]["phone"])
    assert tried >= 15
    after = snapshot(stack, values)
    assert after == before
    # and A still reaches each of them
    for url in (
        f"/api/v1/applications/{values['app_no']}",
        f"/api/v1/uploads/{values['file_id']}",
        f"/api/v1/payments/{values['out_trade_no']}",
        f"/api/v1/accounts/{values['account_no']}/charges",
    ):
        assert stack.api("GET", url, token=world["a"]).status_code == 200, url


def test_a_s_own_views_are_masked(stack, world):
    account, body = world["account"], world["body"]
    phone = account["phone"]
    resp = stack.api("GET", "/api/v1/accounts", token=world["a"])
    assert resp.status_code == 200
    assert phone not in resp.text and account["holder_name"] not in resp.text
    assert f"{phone[:3]}****{phone[-4:]}" in resp.text
    resp = stack.api("GET", f"/api/v1/applications/{world['values']['app_no']}", token=world["a"])
    assert resp.status_code == 200
    clear = [
        v
        for v in (
            body["applicant"].get("mobile"),
            body["applicant"].get("id_number"),
            body["applicant"].get("agent_mobile"),
            resident_id(),
        )
        if v
    ]
    assert len(clear) >= 2
    for value in clear:
        assert value not in resp.text, value
    resp = stack.api("GET", "/api/v1/applications", token=world["a"])
    for value in clear:
        assert value not in resp.text, value
    mobile = world["a_mobile"]
    for path in ("/api/v1/me/phone", "/api/v1/accounts/proposals"):
        resp = stack.api("GET", path, token=world["a"])
        assert resp.status_code == 200 and mobile not in resp.text and f"{mobile[:3]}****{mobile[-4:]}" in resp.text


def test_no_mobile_in_clear_in_any_stored_document(stack, world):
    """Every collection (accounts, codes, verified mobiles, candidates, preferences, outbox, ...) is
    searched for every mobile the session used so far: none is stored in clear."""
    mobiles = {s for s in SECRETS if len(s) == 11 and s.isdigit()}
    assert world["a_mobile"] in mobiles and world["account"]["phone"] in mobiles
    searched = set()
    for name in stack.db.list_collection_names():
        if name.startswith("files."):
            continue  # uploads and PDFs: binary content
        searched.add(name)
        for doc in stack.db[name].find():
            text = str(doc)
            leaked = [m for m in mobiles if m in text]
            assert not leaked, (name, leaked[0][:3], doc.get("_id"))
    assert {"accounts", "verified_phones", "account_candidates", "binding_preferences", "sms_codes"} <= searched


def test_log_check_finds_a_secret(tmp_path):
    """The session's log check (conftest) can fail: a registered mobile in a line is found."""
    mobile = "13912345678"
    SECRETS.add(mobile)
    (tmp_path / "app.log").write_text("INFO fine\nINFO sent to 139****5678\n")
    assert secrets_in_logs(tmp_path) == []
    (tmp_path / "worker.log").write_text(f"INFO sent to x{mobile}y\n")
    assert len(secrets_in_logs(tmp_path)) == 1
    SECRETS.discard(mobile)
