"""The marketing system reads contracts: by number, its PDF, and by work order; signed requests only."""

from __future__ import annotations

import hashlib

import pytest
from conftest import error_of
from contract_support import apply_seal, contract_terms, create_application, issue_contract

CUSTOMER = "郏县惠源纺织有限公司"


@pytest.fixture(scope="module")
def contract(stack):
    token = stack.login()
    app_no = create_application(stack, token)
    issued = issue_contract(stack, app_no)
    return {"token": token, "app_no": app_no, "no": issued["contract_no"]}


def _stored(stack, no: str) -> dict:
    return stack.db.contracts.find_one({"_id": no})


def test_reads_need_the_internal_signature(stack, contract):
    for path in (
        f"/internal/v1/contracts/{contract['no']}",
        f"/internal/v1/contracts/{contract['no']}/pdf",
        f"/internal/v1/applications/{contract['app_no']}/contract",
    ):
        resp = stack.api("GET", path)
        assert resp.status_code == 401 and error_of(resp)["code"] == "signature_missing", path
        resp = stack.internal("GET", path, secret="not-the-secret")
        assert resp.status_code == 401 and error_of(resp)["code"] == "signature_invalid", path
        # a customer's bearer token is no way in either
        resp = stack.api("GET", path, token=contract["token"])
        assert resp.status_code == 401, path


def test_unknown_numbers_are_404(stack, contract):
    for path, code in (
        (("/internal/v1/contracts/HT2099010100000000"), "contract_not_found"),
        ("/internal/v1/contracts/HT2099010100000000/pdf", "contract_not_found"),
        ("/internal/v1/applications/20990101000000/contract", "application_not_found"),
    ):
        resp = stack.internal("GET", path)
        assert resp.status_code == 404 and error_of(resp)["code"] == code, path
    # a work order with no contract issued yet
    bare = create_application(stack, contract["token"])
    resp = stack.internal("GET", f"/internal/v1/applications/{bare}/contract")
    assert resp.status_code == 404 and error_of(resp)["code"] == "contract_not_found"


def test_before_signing_the_draft_is_served_with_its_hash(stack, contract):
    resp = stack.internal("GET", f"/internal/v1/contracts/{contract['no']}")
    assert resp.status_code == 200, resp.text
    view = resp.json()["contract"]
    stored = _stored(stack, contract["no"])
    assert view["status"] == "pending" and view["status_label"] == "待签署" and view["signatures"] == []
    assert view["terms"] == contract_terms() and view["parties"]["customer"]["name"] == CUSTOMER
    assert view["files"] == {
        "draft": {"sha256": stored["files"]["draft"]["sha256"], "size": stored["files"]["draft"]["size"]},
        "signed": None,
    }
    pdf = stack.internal("GET", f"/internal/v1/contracts/{contract['no']}/pdf")
    assert pdf.status_code == 200 and pdf.headers["Content-Type"] == "application/pdf"
    assert hashlib.sha256(pdf.content).hexdigest() == stored["files"]["draft"]["sha256"]
    assert pdf.headers["X-Content-SHA256"] == stored["files"]["draft"]["sha256"]
    by_order = stack.internal("GET", f"/internal/v1/applications/{contract['app_no']}/contract")
    assert by_order.status_code == 200 and by_order.json()["contract"]["contract_no"] == contract["no"]


def test_after_signing_the_signed_pdf_and_both_signatures_are_served(stack, contract):
    token = contract["token"]
    seal = apply_seal(stack, token, org_name=CUSTOMER)
    resp = stack.api(
        "POST",
        f"/api/v1/contracts/{contract['no']}/preview",
        token=token,
        json={"seal_id": seal["seal_id"], "signature": {"type": "typed", "name": "王立新"}},
    )
    assert resp.status_code == 201, resp.text
    resp = stack.api(
        "POST",
        f"/api/v1/contracts/{contract['no']}/confirm",
        token=token,
        json={"preview_id": resp.json()["preview"]["preview_id"]},
    )
    assert resp.status_code == 200, resp.text
    stored = _stored(stack, contract["no"])
    view = stack.internal("GET", f"/internal/v1/applications/{contract['app_no']}/contract").json()["contract"]
    assert view["status"] == "effective" and view["status_label"] == "已签字"
    assert [s["role"] for s in view["signatures"]] == ["customer", "supplier"]
    assert all(s["signed_at"] for s in view["signatures"]) and view["signed_at"]
    assert view["files"]["signed"]["sha256"] == stored["files"]["signed"]["sha256"]
    assert view["files"]["draft"]["sha256"] == stored["files"]["draft"]["sha256"]
    pdf = stack.internal("GET", f"/internal/v1/contracts/{contract['no']}/pdf")
    assert pdf.status_code == 200
    assert hashlib.sha256(pdf.content).hexdigest() == stored["files"]["signed"]["sha256"] == view["sha256"]
    assert pdf.content.count(b"/ByteRange") >= 2
