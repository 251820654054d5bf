"""Helpers for application tests: a ready-to-submit application of any catalogue type, over HTTP.

Everything is generated from the served schema (``catalog_samples``), so every type of the
catalogue is covered; the account, the uploads and the SMS code are real (through the API).
"""

from __future__ import annotations

import io
from datetime import datetime
from zoneinfo import ZoneInfo

from catalog_samples import sample_account, valid_submission
from conftest import bind_account, new_mobile, put_account
from PIL import Image

SHANGHAI = ZoneInfo("Asia/Shanghai")


def shanghai_today():
    return datetime.now(SHANGHAI).date()


def file_bytes(content_type: str) -> tuple[str, bytes]:
    buf = io.BytesIO()
    if content_type == "application/pdf":
        Image.new("RGB", (20, 20), "white").save(buf, "PDF")
        return "scan.pdf", buf.getvalue()
    fmt = {"image/jpeg": "JPEG", "image/png": "PNG"}[content_type]
    Image.new("RGB", (16, 12), (200, 30, 30)).save(buf, fmt)
    return f"photo.{fmt.lower()}", buf.getvalue()


def upload(stack, token, content_type="image/jpeg", kind=None) -> str:
    name, data = file_bytes(content_type)
    resp = stack.api(
        "POST",
        "/api/v1/uploads",
        token=token,
        files={"file": (name, data, content_type)},
        data={"kind": kind} if kind else None,
    )
    assert resp.status_code == 201, resp.text
    return resp.json()["file_id"]


def schema_of(stack, code) -> dict:
    resp = stack.api("GET", f"/api/v1/services/{code}")
    assert resp.status_code == 200, resp.text
    return resp.json()


def eligible_account(stack, token, schema, **overrides) -> dict | None:
    """Create and bind an account the type admits (None for types that need no account)."""
    sample = sample_account(schema)
    if sample is None:
        return None
    tariff = {"tou": False, "two_part": False, "max_demand": False, **sample["tariff"]}
    fields = {
        "customer_class": sample["customer_class"],
        "tariff": tariff,
        "capacity_kva": sample["capacity_kva"],
        **overrides,
    }
    if fields["customer_class"] != "低压居民":
        fields.setdefault("holder_name", "郏县明超实业有限公司")
    account = put_account(stack, **fields)
    bind_account(stack, token, account)
    return account


def request_apply_code(stack, token, mobile) -> str:
    resp = stack.api("POST", "/api/v1/sms-codes", token=token, json={"mobile": mobile, "purpose": "apply"})
    assert resp.status_code == 201, resp.text
    return stack.last_sms_code(mobile)


def prepare(stack, token, code, *, identity="owner", account=None, with_code=True, **choose) -> dict:
    """A valid application body for ``code``: real uploads, a fresh mobile, and its SMS code.

    Returns the body; ``body["_contact"]`` is the mobile the code went to (removed before sending).
    """
    schema = schema_of(stack, code)
    if account is None:
        account = eligible_account(stack, token, schema)
    submission = valid_submission(
        schema,
        choose={"applicant.identity": identity, **choose},
        account=account or sample_account(schema),
        today=shanghai_today(),
    )
    applicant = submission["applicant"]
    applicant["mobile"] = new_mobile()
    if "agent_mobile" in applicant:
        applicant["agent_mobile"] = new_mobile()
    contact = applicant.get("agent_mobile") if identity == "agent" else applicant["mobile"]
    accepts = {a["kind"]: a["accept"] for a in schema["attachments"]}
    submission["attachments"] = {
        kind: [upload(stack, token, accepts[kind][0], kind)] for kind in submission["attachments"]
    }
    body = {"service": code, **submission}
    if account:
        body["account_no"] = account["account_no"]
    body["sms_code"] = request_apply_code(stack, token, contact) if with_code else "000000"
    body["_contact"] = contact
    body["_account"] = account
    return body


def submit(stack, token, body, **kwargs):
    sent = {k: v for k, v in body.items() if not k.startswith("_")}
    return stack.api("POST", "/api/v1/applications", token=token, json=sent, **kwargs)


def submitted(stack, token, code, **kwargs) -> tuple[dict, dict]:
    """Submit a valid application of ``code``; returns ``(response body, request body)``."""
    body = prepare(stack, token, code, **kwargs)
    resp = submit(stack, token, body)
    assert resp.status_code == 201, resp.text
    return resp.json(), body


def advance(stack, app_no, stage, note="", operator="营销系统-张工", **extra):
    return stack.internal(
        "POST",
        f"/internal/v1/applications/{app_no}/stage",
        json={"stage": stage, "note": note, "operator": operator, **extra},
    )
