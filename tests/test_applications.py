"""Applications over HTTP: every catalogue type submitted, refused when invalid or ineligible;
服务记录 and the detail view; cancellation; work-order stages from the marketing system;
ownership; personal data never stored in clear; application numbers unique under concurrency."""

from __future__ import annotations

import json
import re
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from application_support import (
    advance,
    eligible_account,
    prepare,
    schema_of,
    shanghai_today,
    submit,
    submitted,
    upload,
)
from catalog_samples import ineligible_cases, invalid_submission, resident_id
from conftest import bind_account, error_of, new_mobile, put_account
from waits import outbox_idle, wait_until

from wx_backend.services.catalog import BUILTIN_DIR, load_catalog

CATALOG = load_catalog(BUILTIN_DIR)
CODES = CATALOG.codes()
CJK = re.compile(r"[\u4e00-\u9fff]")
APP_NO = re.compile(r"^[0-9]{14}$")
RESIDENT_ID = re.compile(r"^[0-9]{17}[0-9X]$")
MOBILE = re.compile(r"^1[3-9][0-9]{9}$")


def test_the_fourteen_types_are_covered():
    assert len(CODES) >= 14


# -- every type ----------------------------------------------------------------------------


@pytest.mark.parametrize("code", CODES)
def test_a_valid_submission_is_accepted(stack, code):
    token = stack.login()
    body = prepare(stack, token, code)
    resp = submit(stack, token, body)
    assert resp.status_code == 201, resp.text
    out = resp.json()
    app_no = out["app_no"]
    assert APP_NO.match(app_no) and app_no[:8] == shanghai_today().strftime("%Y%m%d")
    view = out["application"]
    assert view["service"] == code and view["service_name"] == CATALOG.get(code).name
    assert view["stage"] == "submitted" and view["status"] == "pending" and view["can_cancel"] is True
    assert view["account_no"] == (body["_account"] or {}).get("account_no")
    # the form as submitted, personal data masked
    mobile = body["applicant"]["mobile"]
    assert view["applicant"]["mobile"] == mobile[:3] + "****" + mobile[-4:]
    id_no = body["applicant"]["id_no"]
    assert view["applicant"]["id_no"] == id_no[:3] + "*" * (len(id_no) - 7) + id_no[-4:]
    if body["applicant"]["id_type"] == "resident_id":  # an organisation's credit code may recur in the form
        assert id_no not in json.dumps(view, ensure_ascii=False)
    for name, value in body["form"].items():
        if f"form.{name}" not in CATALOG.sensitive_paths(code):
            assert view["form"][name] == value, name
    assert {a["kind"] for a in view["attachments"]} == set(body["attachments"])
    assert [t["stage"] for t in view["timeline"]] == ["submitted"]
    assert view["timeline"][0]["at"].endswith("+08:00")
    assert view["next_action"]["required"] is False
    stored = stack.db.applications.find_one({"app_no": app_no})
    assert stored["history"][0]["source"] == "customer" and stored["stage"] == "submitted"
    # the code was spent: the same body again is refused
    resp = submit(stack, token, body)
    assert resp.status_code == 400 and error_of(resp)["code"] == "sms_code_invalid"


@pytest.mark.parametrize("code", CODES)
def test_an_invalid_submission_lists_every_field_error(stack, code):
    token = stack.login()
    schema = schema_of(stack, code)
    account = eligible_account(stack, token, schema)
    broken, paths = invalid_submission(schema)
    body = {"service": code, **broken, "sms_code": "12"}
    if account:
        body["account_no"] = account["account_no"]
    before = stack.db.applications.count_documents({})
    resp = stack.api("POST", "/api/v1/applications", token=token, json=body)
    assert resp.status_code == 422, resp.text
    error = error_of(resp)
    assert error["code"] == "validation_failed"
    got = [d["field"] for d in error["details"]]
    assert sorted(got) == sorted(paths | {"sms_code"})
    assert all(CJK.search(d["message"]) for d in error["details"])
    assert stack.db.applications.count_documents({}) == before


@pytest.mark.parametrize("code", CODES)
def test_an_ineligible_customer_is_refused_with_the_reason(stack, code):
    schema = schema_of(stack, code)
    cases = ineligible_cases(schema)
    assert cases
    before = stack.db.applications.count_documents({"service": code})
    for account_case, form_case in cases:
        token = stack.login()
        account = False  # no account bound
        if account_case is not None:
            tariff = {"tou": False, "two_part": False, "max_demand": False, **account_case["tariff"]}
            account = put_account(
                stack,
                customer_class=account_case["customer_class"],
                tariff=tariff,
                capacity_kva=account_case["capacity_kva"],
            )
            bind_account(stack, token, account)
        body = prepare(stack, token, code, with_code=False, account=account)
        if form_case:
            body["form"].update(form_case)
        resp = submit(stack, token, body)
        assert resp.status_code == 403, (account_case, form_case, resp.text)
        error = error_of(resp)
        assert error["code"] == "not_eligible" and CJK.search(error["message"]), error
    assert stack.db.applications.count_documents({"service": code}) == before


# -- rules of a submission ---------------------------------------------------------------------


def test_the_sms_code_must_be_the_applicants(stack):
    token = stack.login()
    body = prepare(stack, token, "personal_new")
    other = new_mobile()
    stack.api("POST", "/api/v1/sms-codes", token=token, json={"mobile": other, "purpose": "apply"})
    body["sms_code"] = stack.last_sms_code(other)  # a code sent to another phone
    resp = submit(stack, token, body)
    assert resp.status_code == 400 and error_of(resp)["code"] == "sms_code_invalid"
    body["sms_code"] = stack.last_sms_code(body["_contact"])
    assert submit(stack, token, body).status_code == 201


def test_an_agent_proves_the_agents_mobile(stack):
    token = stack.login()
    out, body = submitted(stack, token, "meter_test", identity="agent")
    assert body["_contact"] == body["applicant"]["agent_mobile"]
    view = out["application"]
    assert view["applicant"]["identity"] == "agent"
    assert view["applicant"]["agent_id_no"] != body["applicant"]["agent_id_no"]
    assert "*" in view["applicant"]["agent_name"]


def test_an_attachment_of_the_wrong_type_is_a_field_error(stack):
    token = stack.login()
    body = prepare(stack, token, "personal_new", identity="agent")
    body["attachments"]["agent_id_card"] = [upload(stack, token, "application/pdf")]  # JPEG/PNG only
    resp = submit(stack, token, body)
    assert resp.status_code == 422
    assert [d["field"] for d in error_of(resp)["details"]] == ["attachments.agent_id_card"]


def test_an_unknown_service_and_a_malformed_body(stack):
    token = stack.login()
    resp = stack.api("POST", "/api/v1/applications", token=token, json={"service": "no_such_type"})
    assert resp.status_code == 404 and error_of(resp)["code"] == "service_not_found"
    resp = stack.api("POST", "/api/v1/applications", token=token, json={})
    assert resp.status_code == 422 and error_of(resp)["details"][0]["field"] == "service"
    resp = stack.api(
        "POST", "/api/v1/applications", token=token, data=b"[1]", headers={"Content-Type": "application/json"}
    )
    assert resp.status_code == 400
    assert stack.api("POST", "/api/v1/applications", json={"service": "other"}).status_code == 401


def test_an_account_not_bound_by_the_user_is_404(stack):
    owner, stranger = stack.login(), stack.login()
    schema = schema_of(stack, "meter_test")
    account = eligible_account(stack, owner, schema)
    body = prepare(stack, stranger, "meter_test", account=account)
    resp = submit(stack, stranger, body)
    assert resp.status_code == 404 and error_of(resp)["code"] == "account_not_found"


def test_an_idempotency_key_makes_a_retry_return_the_first_application(stack):
    token = stack.login()
    body = prepare(stack, token, "ev_charger")
    headers = {"Idempotency-Key": "retry-key-0001"}
    first = submit(stack, token, body, headers=dict(headers))
    assert first.status_code == 201
    again = submit(stack, token, body, headers=dict(headers))  # the code is spent; the key answers
    assert again.status_code == 200 and again.json()["app_no"] == first.json()["app_no"]
    assert stack.db.applications.count_documents({"app_no": first.json()["app_no"]}) == 1
    # another user's identical key is theirs alone
    other = stack.login()
    resp = submit(stack, other, prepare(stack, other, "ev_charger"), headers=dict(headers))
    assert resp.status_code == 201 and resp.json()["app_no"] != first.json()["app_no"]


# -- 服务记录 and cancellation ------------------------------------------------------------------


def test_service_records_are_newest_first_paged_and_filtered(stack):
    token = stack.login()
    nos = [submitted(stack, token, code)[0]["app_no"] for code in ("personal_new", "ev_charger", "personal_new")]
    resp = stack.api("GET", "/api/v1/applications", token=token)
    assert resp.status_code == 200
    listed = resp.json()
    assert [i["app_no"] for i in listed["items"]] == nos[::-1] and listed["total"] == 3
    page2 = stack.api("GET", "/api/v1/applications?page=2&per_page=2", token=token).json()
    assert [i["app_no"] for i in page2["items"]] == [nos[0]] and page2["total"] == 3
    assert advance(stack, nos[1], "accepted").status_code == 200
    processing = stack.api("GET", "/api/v1/applications?status=processing", token=token).json()
    assert [i["app_no"] for i in processing["items"]] == [nos[1]]
    pending = stack.api("GET", "/api/v1/applications?status=pending", token=token).json()
    assert [i["app_no"] for i in pending["items"]] == [nos[2], nos[0]]
    resp = stack.api("GET", "/api/v1/applications?status=nope&per_page=500", token=token)
    assert resp.status_code == 422
    assert {d["field"] for d in error_of(resp)["details"]} == {"status", "per_page"}
    assert stack.api("GET", "/api/v1/applications", token=stack.login()).json()["items"] == []


def test_cancel_only_before_acceptance(stack):
    token = stack.login()
    first = submitted(stack, token, "personal_new")[0]["app_no"]
    second = submitted(stack, token, "personal_new")[0]["app_no"]
    resp = stack.api("POST", f"/api/v1/applications/{first}/cancel", token=token)
    assert resp.status_code == 200
    view = resp.json()["application"]
    assert view["stage"] == "cancelled" and view["status"] == "cancelled" and view["can_cancel"] is False
    assert [t["stage"] for t in view["timeline"]] == ["submitted", "cancelled"]
    again = stack.api("POST", f"/api/v1/applications/{first}/cancel", token=token)
    assert again.status_code == 200 and len(again.json()["application"]["timeline"]) == 2
    # cancelled is final: the marketing system cannot accept it any more
    resp = advance(stack, first, "accepted")
    assert resp.status_code == 409 and error_of(resp)["details"]["allowed"] == []

    assert advance(stack, second, "accepted").status_code == 200
    resp = stack.api("POST", f"/api/v1/applications/{second}/cancel", token=token)
    assert resp.status_code == 409 and error_of(resp)["code"] == "cannot_cancel"
    assert stack.db.applications.find_one({"app_no": second})["stage"] == "accepted"


# -- work-order stages from the marketing system ---------------------------------------------------


def test_the_internal_stage_endpoint(stack):
    token = stack.login()
    app_no = submitted(stack, token, "meter_test")[0]["app_no"]
    resp = advance(stack, app_no, "accepted", note="资料齐全，予以受理")
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"app_no": app_no, "stage": "accepted", "status": "processing", "history_length": 2}
    # the same change again: no new history entry
    resp = advance(stack, app_no, "accepted", note="重复推送")
    assert resp.status_code == 200 and resp.json()["history_length"] == 2
    # not a next stage: 409 listing the allowed ones, nothing changes
    resp = advance(stack, app_no, "archived")
    assert resp.status_code == 409
    error = error_of(resp)
    assert error["code"] == "invalid_stage_transition" and error["details"]["allowed"] == ["meter_testing"]
    assert "电能表校验" in error["message"]
    resp = advance(stack, app_no, "no_such_stage")
    assert resp.status_code == 409
    doc = stack.db.applications.find_one({"app_no": app_no})
    assert doc["stage"] == "accepted" and len(doc["history"]) == 2
    entry = doc["history"][1]
    assert entry["operator"] == "营销系统-张工" and entry["note"] == "资料齐全，予以受理"
    assert entry["source"] == "marketing" and entry["at"]
    # errors of the request itself
    resp = stack.internal("POST", f"/internal/v1/applications/{app_no}/stage", json={"stage": "meter_testing"})
    assert resp.status_code == 422 and [d["field"] for d in error_of(resp)["details"]] == ["operator"]
    resp = advance(stack, "20200101000001", "accepted")
    assert resp.status_code == 404 and error_of(resp)["code"] == "application_not_found"
    resp = stack.api("POST", f"/internal/v1/applications/{app_no}/stage", json={"stage": "meter_testing"})
    assert resp.status_code == 401
    # the customer sees the timeline with the note
    view = stack.api("GET", f"/api/v1/applications/{app_no}", token=token).json()["application"]
    assert [(t["stage_name"], t["note"]) for t in view["timeline"]] == [("已提交", ""), ("受理", "资料齐全，予以受理")]
    assert "operator" not in view["timeline"][1]


def test_notes_are_scrubbed_of_id_numbers_and_mobiles(stack):
    token = stack.login()
    out, body = submitted(stack, token, "other")
    app_no = out["app_no"]
    note = f"已电话联系 {body['applicant']['mobile']}，核对身份证 {body['applicant']['id_no']}"
    assert advance(stack, app_no, "accepted", note=note).status_code == 200
    stored = stack.db.applications.find_one({"app_no": app_no})["history"][-1]["note"]
    assert body["applicant"]["mobile"] not in stored and body["applicant"]["id_no"] not in stored
    assert "****" in stored


def test_concurrent_advances_apply_once(stack):
    token = stack.login()
    app_no = submitted(stack, token, "rename_transfer")[0]["app_no"]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: advance(stack, app_no, "accepted").status_code, range(8)))
    assert results == [200] * 8
    doc = stack.db.applications.find_one({"app_no": app_no})
    assert [h["stage"] for h in doc["history"]] == ["submitted", "accepted"]
    assert stack.db.outbox.count_documents({"dedupe_key": f"stage:{app_no}:accepted"}) == 1


def test_the_enterprise_new_journey(stack):
    token = stack.login()
    out, _ = submitted(stack, token, "enterprise_new")
    app_no = out["app_no"]
    for stage in ("accepted", "survey", "plan_reply", "contract_signing"):
        resp = advance(stack, app_no, stage, note=f"{stage} 完成")
        assert resp.status_code == 200 and resp.json()["stage"] == stage
    view = stack.api("GET", f"/api/v1/applications/{app_no}", token=token).json()["application"]
    assert view["stage_name"] == "合同签订" and view["status"] == "action_required"
    assert view["next_action"]["required"] is True
    assert "“服务记录”中点击“合同签订”" in view["next_action"]["text"]
    assert view["next_action"]["page"] == f"pages/applications/detail?app_no={app_no}&action=sign"
    assert [s["state"] for s in view["stages"]] == ["done"] * 4 + ["current", "pending", "pending"]
    resp = advance(stack, app_no, "archived")
    assert resp.status_code == 409 and error_of(resp)["details"]["allowed"] == ["connection"]
    assert len(stack.db.applications.find_one({"app_no": app_no})["history"]) == 5


# -- ownership and personal data ---------------------------------------------------------------------


def test_another_user_cannot_read_cancel_or_attach(stack):
    owner, stranger = stack.login(), stack.login()
    out, body = submitted(stack, owner, "personal_new")
    app_no = out["app_no"]
    for method, path in (("GET", f"/api/v1/applications/{app_no}"), ("POST", f"/api/v1/applications/{app_no}/cancel")):
        resp = stack.api(method, path, token=stranger)
        assert resp.status_code == 404 and error_of(resp)["code"] == "application_not_found"
    assert stack.api("GET", "/api/v1/applications", token=stranger).json()["items"] == []
    assert stack.db.applications.find_one({"app_no": app_no})["stage"] == "submitted"
    # the stranger cannot attach the owner's upload to their own application
    theirs = prepare(stack, stranger, "personal_new")
    kind = next(iter(theirs["attachments"]))
    theirs["attachments"][kind] = body["attachments"][kind]
    resp = submit(stack, stranger, theirs)
    assert resp.status_code == 404 and error_of(resp)["code"] == "file_not_found"
    # the code was not spent on the refusal
    theirs["attachments"][kind] = [upload(stack, stranger, "image/jpeg", kind)]
    assert submit(stack, stranger, theirs).status_code == 201
    for bad in ("123", "20260101000001", "../x"):
        assert stack.api("GET", f"/api/v1/applications/{bad}", token=owner).status_code == 404


def test_no_id_number_or_phone_is_stored_in_clear(stack):
    token = stack.login()
    secrets_used = set()
    for code, identity in (
        ("enterprise_new", "agent"),
        ("personal_new", "owner"),
        ("vat_change", "owner"),
        ("capacity_increase", "agent"),
    ):
        out, body = submitted(stack, token, code, identity=identity)
        for path in CATALOG.sensitive_paths(code):
            section, _, name = path.partition(".")
            value = str(body[section].get(name, ""))
            if RESIDENT_ID.match(value) or MOBILE.match(value):  # a person's ID number or phone
                secrets_used.add(value)
        if body["_account"]:
            secrets_used.add(body["_account"]["phone"])
        note = f"联系电话 {body['applicant']['mobile']}"
        assert advance(stack, out["app_no"], "accepted", note=note).status_code == 200
    secrets_used.add(resident_id())
    assert len(secrets_used) >= 8
    for collection in ("applications", "outbox", "users", "accounts", "sms_codes", "counters"):
        for doc in stack.db[collection].find():
            text = json.dumps(doc, ensure_ascii=False, default=str)
            for value in secrets_used:
                assert value not in text, (collection, value)


def test_applications_stored_with_the_former_field_name_still_read(stack):
    """Personal data stored as ``sealed`` (before the field became ``encrypted``) is still
    shown masked and still scrubbed from operator notes."""
    token = stack.login()
    out, body = submitted(stack, token, "personal_new")
    app_no, id_no = out["app_no"], body["applicant"]["id_no"]
    renamed = stack.db.applications.update_one({"app_no": app_no}, {"$rename": {"encrypted": "sealed"}})
    assert renamed.modified_count == 1
    view = stack.api("GET", f"/api/v1/applications/{app_no}", token=token).json()["application"]
    assert view["applicant"]["id_no"] == id_no[:3] + "*" * (len(id_no) - 7) + id_no[-4:]
    assert advance(stack, app_no, "accepted", note=f"核对身份证 {id_no}").status_code == 200
    stored = stack.db.applications.find_one({"app_no": app_no})
    assert id_no not in stored["history"][-1]["note"] and "encrypted" not in stored


# -- numbers ---------------------------------------------------------------------------------------


def test_thirty_concurrent_submissions_get_thirty_distinct_numbers(stack):
    bodies = []
    for _ in range(30):
        token = stack.login()
        bodies.append((token, prepare(stack, token, "ev_charger")))
    with ThreadPoolExecutor(30) as pool:
        responses = list(pool.map(lambda tb: submit(stack, tb[0], tb[1]), bodies))
    assert [r.status_code for r in responses] == [201] * 30, [r.text for r in responses if r.status_code != 201]
    numbers = [r.json()["app_no"] for r in responses]
    assert len(set(numbers)) == 30
    day = shanghai_today().strftime("%Y%m%d")
    assert all(n.startswith(day) for n in numbers)


def test_a_contract_number_given_with_the_stage_opens_the_signing_page(stack):
    token = stack.login()
    app_no = submitted(stack, token, "rename_transfer")[0]["app_no"]
    assert advance(stack, app_no, "accepted").status_code == 200
    resp = stack.internal(
        "POST",
        f"/internal/v1/applications/{app_no}/stage",
        json={"stage": "contract_signing", "operator": "营销系统", "contract_no": "HT2026000001"},
    )
    assert resp.status_code == 200 and resp.json()["stage"] == "contract_signing"
    view = stack.api("GET", f"/api/v1/applications/{app_no}", token=token).json()["application"]
    assert view["contract_no"] == "HT2026000001" and view["status"] == "action_required"
    assert view["next_action"]["page"] == "pages/contract/sign?contract_no=HT2026000001"
    assert "新的供用电合同" in view["next_action"]["text"]


def test_reaching_contract_signing_sends_one_template_message_to_the_subscriber(stack):
    """The manual's flow for 企业新装: the subscriber is told, once, to open the signing page."""
    unionid = f"u_{uuid.uuid4().hex[:16]}"
    oa_openid = f"oa_{uuid.uuid4().hex[:16]}"
    token = stack.login(unionid=unionid)
    follow = stack.sandbox_call("POST", "/sandbox/oa/follow", json={"openid": oa_openid, "unionid": unionid})
    assert follow.status_code == 200, follow.text
    out, _ = submitted(stack, token, "enterprise_new")
    app_no = out["app_no"]
    for stage in ("accepted", "survey", "plan_reply"):
        assert advance(stack, app_no, stage).status_code == 200
    assert advance(stack, app_no, "contract_signing", contract_no="HT" + app_no).status_code == 200

    def contract_messages():
        messages = stack.sandbox_call("GET", "/sandbox/oa/messages", params={"touser": oa_openid}).json()["messages"]
        return [
            m for m in messages if (m.get("miniprogram") or {}).get("pagepath", "").startswith("pages/contract/sign")
        ]

    sent = wait_until(contract_messages, what="the contract message")
    assert len(sent) == 1, sent
    assert sent[0]["miniprogram"] == {
        "appid": stack.env["WX_MP_APPID"],
        "pagepath": f"pages/contract/sign?contract_no=HT{app_no}",
    }
    # the marketing system re-sends the same stage change: nothing more is sent
    assert advance(stack, app_no, "contract_signing").status_code == 200
    outbox_idle(stack.db, {"dedupe_key": {"$regex": f"^(stage|app):{app_no}:"}})
    assert len(contract_messages()) == 1
    assert stack.db.outbox.count_documents({"dedupe_key": f"stage:{app_no}:contract_signing"}) == 1
