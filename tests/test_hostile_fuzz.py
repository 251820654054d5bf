"""Property-based: every documented string parameter of every operation, given hostile text,
gets a 4xx with the error shape, promptly.

For each operation of the OpenAPI document and each of its string parameters (path, query, and
the top-level string properties of a JSON body), hypothesis generates values a validator must
refuse: a valid value with a Unicode digit in place of an ASCII one, with whitespace or a control
character around it, control characters alone, Unicode digits alone, and long strings. The other
parameters of the request hold valid values (an account the user has bound, a real period, a
complete account record...), so the hostile value alone decides the answer. Free-text fields
(names, addresses, reasons) are trimmed by design, so they get control characters and
over-long text only.

Counts: ``OPERATIONS`` operations with at least one string parameter, ``WX_HOSTILE_EXAMPLES``
examples (default 12) per parameter; the figures are printed at the end of the module.
"""

from __future__ import annotations

import json
import os
import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import hypothesis
import pytest
import requests
from conftest import error_of, new_mobile
from hypothesis import strategies as st
from query_support import bound_account

from handlers.openapi import document

EXAMPLES = int(os.environ.get("WX_HOSTILE_EXAMPLES", "12"))
DOC = document()
SCHEMAS = DOC.get("components", {}).get("schemas", {})
METHODS = ("get", "post", "put", "patch", "delete")

# free text: trimmed by design; must still refuse control characters and over-long values
FREE_TEXT = {
    "holder_name",
    "address",
    "region",
    "feeder",
    "reason",
    "area",
    "org_name",
    "legal_rep",
    "operator",
    "note",
    "ref",
    "template",
}
# WeChat's callback query (signature, nonce, ...) are proven by the signature, not by a shape
SKIP = {("/wechat/official-account", "get"), ("/wechat/official-account", "post")}
DIGITS = "٠١٢٣٤٥٦٧٨٩０１２３４５６７８９۰۱۲۳۴۵۶۷۸۹०१२३४५६७८९𝟎𝟏𝟐𝟑"
SPACES = [" ", "\n", "\r\n", "\t", "\x0b", "\x0c", "\u3000", "\xa0", "\u2028", "\x00", "\x1b", "\x7f", "\x85"]


def _schema(ref_or_schema: dict) -> dict:
    if "$ref" in ref_or_schema:
        return SCHEMAS[ref_or_schema["$ref"].rsplit("/", 1)[-1]]
    return ref_or_schema


def _targets() -> list[tuple[str, str, str, str]]:
    """(path, method, where, name) of every string parameter."""
    found = []
    for path, item in DOC["paths"].items():
        for method, op in item.items():
            if method not in METHODS or (path, method) in SKIP:
                continue
            if path.startswith("/h5/"):  # HTML pages behind a web session: tests/test_h5_pages.py
                continue
            for param in op.get("parameters", []):
                if param["in"] in ("path", "query") and _schema(param.get("schema", {})).get("type") == "string":
                    found.append((path, method, param["in"], param["name"]))
            body = op.get("requestBody", {}).get("content", {}).get("application/json")
            if body:
                for name, prop in _schema(body["schema"]).get("properties", {}).items():
                    if _schema(prop).get("type") == "string":
                        found.append((path, method, "body", name))
    return found


TARGETS = _targets()
OPERATIONS = len({(p, m) for p, m, _, _ in TARGETS})
SENT = {"count": 0}


def _valid(context: dict) -> dict[str, str]:
    """A valid value for each parameter name (the base the hostile value is derived from)."""
    start = datetime.now(UTC) + timedelta(days=2)
    return {
        "account_no": context["account_no"],
        "period": "2026-01",
        "year": "2026",
        "from": "2025-01",
        "to": "2025-06",
        "month": "2025-06",
        "granularity": "month",
        "app_no": "20260101000001",
        "contract_no": "HT2026010100001",
        "preview_id": "0123456789abcdef01234567",
        "seal_id": "0123456789abcdef01234567",
        "file_id": "0123456789abcdef01234567",
        "outage_id": "0123456789abcdef01234567",
        "out_trade_no": "P20260101000000001",
        "code": "capacity_increase",
        "status": "submitted",
        "mobile": context["mobile"],
        "phone": context["mobile"],
        "sms_code": "123456",
        "purpose": "login",
        "auth_code": "134567890123456789",
        "terminal_trade_no": "T0001",
        "service": "capacity_increase",
        "stage": "accepted",
        "kind": "planned",
        "customer_class": "低压居民",
        "credit_code": "91410425MA44XXXX1X",
        "start": start.isoformat(),
        "end": (start + timedelta(hours=4)).isoformat(),
    }


def _base_body(path: str, method: str, context: dict, name: str) -> dict:
    """A complete, valid body where the endpoint has simple ones; else an empty object."""
    valid = _valid(context)
    if (path, method) == ("/internal/v1/accounts/{account_no}", "put"):
        return {
            "holder_name": "张威",
            "phone": valid["mobile"],
            "address": "郏县城关镇人民路1号",
            "region": "郏县城关",
            "feeder": "郏县城关1号线",
            "customer_class": "低压居民",
            "tariff": {"tou": False, "two_part": False, "max_demand": False},
            "capacity_kva": 8,
        }
    if (path, method) == ("/internal/v1/outages", "post"):
        return {
            "regions": ["郏县城关"],
            "kind": "planned",
            "start": valid["start"],
            "end": valid["end"],
            "reason": "线路检修",
            "area": "人民路以东",
            "ref": f"TD{uuid.uuid4().hex[:8]}",
        }
    if (path, method) == ("/api/v1/sms-codes", "post"):
        if name == "account_no":
            return {"purpose": "bind_account", "account_no": valid["account_no"]}
        return {"purpose": "login", "mobile": valid["mobile"]}
    if (path, method) == ("/api/v1/payments", "post"):
        return {"account_no": valid["account_no"], "amount_fen": 100}
    if (path, method) == ("/api/v1/accounts", "post"):
        return {"account_no": valid["account_no"], "holder_name": "张威", "sms_code": "123456"}
    return {}


def hostile(name: str, valid: str | None) -> st.SearchStrategy[str]:
    long_text = st.text(st.characters(blacklist_categories=("Cs",)), min_size=600, max_size=3000)
    controls = st.text(st.characters(whitelist_categories=("Cc",)), min_size=1, max_size=8)
    if name in FREE_TEXT:
        base = valid or "郏县城关"
        injected = st.tuples(st.sampled_from(["\x00", "\x1b", "\x7f", "\x08", "\x1f"]), st.integers(0, len(base)))
        return st.one_of(
            long_text,
            injected.map(lambda t: base[: t[1]] + t[0] + base[t[1] :]),
        )
    strategies = [
        long_text,
        controls,
        st.text(st.sampled_from(DIGITS), min_size=1, max_size=20),
    ]
    if valid:
        positions = [i for i, ch in enumerate(valid) if ch in "0123456789"]
        if positions:
            strategies.append(
                st.tuples(st.sampled_from(positions), st.sampled_from(DIGITS)).map(
                    lambda t: valid[: t[0]] + t[1] + valid[t[0] + 1 :]
                )
            )
        strategies.append(
            st.tuples(st.sampled_from(SPACES), st.booleans()).map(lambda t: valid + t[0] if t[1] else t[0] + valid)
        )
    return st.one_of(*strategies)


@pytest.fixture(scope="module")
def context(stack):
    token, account = bound_account(stack)
    yield {"token": token, "account_no": account["account_no"], "mobile": new_mobile()}
    print(
        f"\nhostile-input fuzz: {SENT['count']} requests, {OPERATIONS} operations, {len(TARGETS)} string "
        f"parameters, {EXAMPLES} examples per parameter"
    )


def _send(stack, context, path: str, method: str, where: str, name: str, value: str) -> requests.Response:
    op = DOC["paths"][path][method]
    valid = _valid(context)
    url_path = path
    query: dict[str, str] = {}
    for param in op.get("parameters", []):
        pname = param["name"]
        if param["in"] == "path":
            raw = value if (where, name) == ("path", pname) else valid.get(pname, "x")
            url_path = url_path.replace("{" + pname + "}", quote(raw, safe=""))
        elif param["in"] == "query" and (where, name) == ("query", pname):
            query[pname] = value
    body = None
    if "requestBody" in op:
        body = _base_body(path, method, context, name)
        if where == "body":
            body[name] = value
    headers = {"Connection": "close"}
    raw_body = b""
    if body is not None:
        raw_body = json.dumps(body, ensure_ascii=False).encode()
        headers["Content-Type"] = "application/json"
    security = [n for req in op.get("security", []) for n in req]
    if "internalHmac" in security:
        headers.update(stack.signed_headers(method.upper(), url_path, raw_body))
    elif "bearerAuth" in security:
        headers["Authorization"] = f"Bearer {context['token']}"
    SENT["count"] += 1
    return requests.request(
        method.upper(), stack.api_url + url_path, params=query, data=raw_body or None, headers=headers, timeout=15
    )


@pytest.mark.parametrize("target", TARGETS, ids=[f"{m.upper()} {p} {w}:{n}" for p, m, w, n in TARGETS])
def test_hostile_string_is_refused(stack, context, target):
    path, method, where, name = target
    valid = _valid(context).get(name)

    @hypothesis.settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(hypothesis.HealthCheck),
    )
    @hypothesis.given(value=hostile(name, valid))
    def check(value: str) -> None:
        resp = _send(stack, context, path, method, where, name, value)
        assert 400 <= resp.status_code < 500, (
            f"{method.upper()} {path} {where}:{name}={value[:80]!r}: {resp.status_code} {resp.text[:200]}"
        )
        error_of(resp)

    check()
