"""Helpers for the seals and contracts tests: SMS-confirmed seals, applications, issued contracts."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from catalog_samples import credit_code
from conftest import Stack, new_mobile, skip_sms_interval

from wx_backend.documents import example_context


def seal_sms_code(stack: Stack, token: str, mobile: str) -> str:
    skip_sms_interval(stack, mobile)
    resp = stack.api("POST", "/api/v1/sms-codes", token=token, json={"mobile": mobile, "purpose": "seal"})
    assert resp.status_code == 201, resp.text
    return stack.last_sms_code(mobile)


def apply_seal(
    stack: Stack,
    token: str,
    *,
    org_name: str = "郏县惠源纺织有限公司",
    kind: str = "generated",
    file_id: str | None = None,
    mobile: str | None = None,
    legal_rep: str = "王立新",
    code: str | None = None,
) -> dict:
    """印章申请 over HTTP; returns the seal view (and ``mobile`` under ``_mobile``)."""
    mobile = mobile or new_mobile()
    body = {
        "kind": kind,
        "org_name": org_name,
        "credit_code": code or credit_code(),
        "legal_rep": legal_rep,
        "mobile": mobile,
        "sms_code": seal_sms_code(stack, token, mobile),
    }
    if file_id:
        body["file_id"] = file_id
    resp = stack.api("POST", "/api/v1/seals", token=token, json=body)
    assert resp.status_code == 201, resp.text
    return {**resp.json()["seal"], "_mobile": mobile}


def user_id_of(stack: Stack, token: str):
    from wx_backend.security import token_hash

    session = stack.db.sessions.find_one({"token_hash": token_hash(token)})
    assert session, "no session for token"
    return session["user_id"]


def new_app_no() -> str:
    return datetime.now(UTC).strftime("%Y%m%d") + f"{uuid.uuid4().int % 10**6:06d}"


def create_application(stack: Stack, token: str, account_no: str | None = None, stage: str = "plan_reply") -> str:
    """An 企业新装 work order of the user of ``token`` at ``stage`` (供电方案答复), written as the
    applications service stores it (set-up shortcut; the journey test submits one over HTTP)."""
    app_no = new_app_no()
    now = datetime.now(UTC)
    stack.db.applications.insert_one(
        {
            "app_no": app_no,
            "service": "enterprise_new",
            "account_no": account_no,
            "user_id": user_id_of(stack, token),
            "status": "processing",
            "stage": stage,
            "form": {"customer_class": "高压", "capacity_kva": 1250},
            "history": [{"stage": "submitted", "at": now, "operator": "customer", "note": "", "source": "customer"}],
            "created_at": now,
            "updated_at": now,
        }
    )
    return app_no


def contract_terms(customer_name: str = "郏县惠源纺织有限公司") -> dict:
    ctx = example_context("hv_new_connection")
    terms = {k: v for k, v in ctx.items() if k not in ("contract_no", "term_months")}
    terms["customer"] = {**ctx["customer"], "name": customer_name}
    return terms


def issue_contract(
    stack: Stack,
    app_no: str,
    *,
    template: str = "hv_new_connection",
    term_months: int = 12,
    terms: dict | None = None,
    expect: int = 201,
) -> dict:
    resp = stack.internal(
        "POST",
        f"/internal/v1/applications/{app_no}/contract",
        json={
            "template": template,
            "terms": terms or contract_terms(),
            "term_months": term_months,
            "operator": "吕东涛",
        },
    )
    assert resp.status_code == expect, resp.text
    return resp.json()["contract"]
