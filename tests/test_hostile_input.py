"""Hostile input over HTTP: Unicode digits, trailing newlines, deep JSON, oversized bodies and XML,
control characters in names, impossible years and times without a zone. Each is refused with a
4xx and the error shape, stores nothing and leaves the process answering."""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import pytest
import requests
from conftest import error_of, new_account_no, new_mobile, put_account
from payments_support import auth_code, register_terminal, terminal_pay
from query_support import bound_account, flat_bill, put_bill
from waits import wait_until

FULL_WIDTH = str.maketrans("0123456789", "０１２３４５６７８９")
ARABIC_INDIC = str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")


def quick(stack, method, path, **kwargs):
    """A request that must be answered promptly (a hang fails the test instead of stalling the run)."""
    kwargs.setdefault("timeout", 10)
    return stack.api(method, path, **kwargs)


@pytest.fixture(scope="module")
def owner(stack):
    return bound_account(stack)


# -- 1. Unicode digits -------------------------------------------------------------------------


@pytest.mark.parametrize("digits", [FULL_WIDTH, ARABIC_INDIC], ids=["full-width", "arabic-indic"])
def test_unicode_digits_in_periods_are_refused(stack, owner, digits):
    token, account = owner
    no = account["account_no"]
    for path, params, field in [
        (f"/api/v1/accounts/{no}/bills", {"year": "2026".translate(digits)}, "year"),
        (f"/api/v1/accounts/{no}/usage", {"from": "2025-01".translate(digits)}, "from"),
        (f"/api/v1/accounts/{no}/usage", {"to": "2025-06".translate(digits)}, "to"),
        (f"/api/v1/accounts/{no}/usage", {"granularity": "day", "month": "2025-06".translate(digits)}, "month"),
    ]:
        resp = quick(stack, "GET", path, token=token, params=params)
        assert resp.status_code == 422, (params, resp.status_code, resp.text[:200])
        assert error_of(resp)["code"] == "validation_failed"
        assert field in [d["field"] for d in resp.json()["error"]["details"]]
    assert quick(stack, "GET", "/healthz").status_code == 200


def test_unicode_digits_in_identifiers_are_refused(stack, owner):
    token, account = owner
    no = account["account_no"]
    wide = no.translate(FULL_WIDTH)
    assert quick(stack, "GET", f"/api/v1/accounts/{quote(wide)}/bills", token=token).status_code == 404
    resp = quick(stack, "GET", f"/api/v1/accounts/{no}/bills/{quote('2026-01'.translate(FULL_WIDTH))}", token=token)
    assert resp.status_code == 404 and error_of(resp)["code"] == "bill_not_found"
    resp = quick(stack, "POST", "/api/v1/payments", token=token, json={"account_no": wide, "amount_fen": 100})
    assert resp.status_code == 422 and error_of(resp)["code"] == "validation_failed"
    resp = stack.internal(
        "PUT", f"/internal/v1/accounts/{quote(new_account_no().translate(FULL_WIDTH))}", json={"holder_name": "张威"}
    )
    assert resp.status_code == 422
    mobile = new_mobile()
    resp = quick(
        stack,
        "POST",
        "/api/v1/sms-codes",
        token=token,
        json={"purpose": "login", "mobile": mobile.translate(FULL_WIDTH)},
    )
    assert resp.status_code == 422
    assert stack.sms_texts(mobile) == []


# -- 2. a trailing newline or surrounding whitespace --------------------------------------------


def test_trailing_newline_account_number_is_not_stored(stack):
    account_no = new_account_no()
    body = {
        "holder_name": "张威",
        "phone": new_mobile(),
        "address": "郏县城关镇人民路1号",
        "region": "郏县城关",
        "feeder": "郏县城关1号线",
        "customer_class": "低压居民",
        "tariff": {"tou": False, "two_part": False, "max_demand": False},
        "capacity_kva": 8,
    }
    for bad in (account_no + "\n", account_no + " ", " " + account_no, account_no + "\r\n"):
        resp = stack.internal("PUT", f"/internal/v1/accounts/{quote(bad)}", json=body)
        assert resp.status_code == 422, (bad, resp.text)
        assert error_of(resp)["code"] == "validation_failed"
    assert stack.db.accounts.count_documents({"account_no": {"$regex": f"^\\s*{account_no}"}}) == 0


def test_trailing_newline_period_bill_is_not_stored(stack, owner):
    token, account = owner
    no = account["account_no"]
    resp = stack.internal(
        "PUT",
        f"/internal/v1/accounts/{no}/bills/{quote('2026-09' + chr(10))}",
        json={"amount_fen": 100, "kwh": {"total": 1}, "due_date": "2026-10-15"},
    )
    assert 400 <= resp.status_code < 500, resp.text
    error_of(resp)
    assert stack.db.bills.count_documents({"account_no": no, "period": {"$ne": None, "$regex": "\n"}}) == 0
    assert stack.db.bills.count_documents({"_id": {"$regex": "\n"}}) == 0
    resp = quick(stack, "GET", f"/api/v1/accounts/{no}/bills", token=token, params={"year": "2026\n"})
    assert resp.status_code == 422


def test_trailing_newline_mobile_gets_no_text(stack):
    token = stack.login()
    mobile = new_mobile()
    for bad in (mobile + "\n", mobile + " ", "\t" + mobile):
        resp = quick(stack, "POST", "/api/v1/sms-codes", token=token, json={"purpose": "login", "mobile": bad})
        assert resp.status_code == 422, resp.text
        assert error_of(resp)["code"] == "validation_failed"
    assert stack.sms_texts(mobile) == []
    assert stack.db.rate_limits.count_documents({"_id": {"$regex": "^sms:mobile:"}, "count": {"$gt": 99}}) == 0


def test_trailing_newline_payment_code_is_not_sent_to_wechat(stack):
    terminal = register_terminal(stack)
    account = put_account(stack)
    code = auth_code(stack, "pay")
    calls_before = stack.db.payments.count_documents({"account_no": account["account_no"]})
    resp = terminal_pay(
        stack, terminal, {"account_no": account["account_no"], "amount_fen": 100, "auth_code": code + "\n"}, timeout=10
    )
    assert resp.status_code == 422, resp.text
    assert resp.json()["error"]["details"][0]["field"] == "auth_code"
    assert stack.db.payments.count_documents({"account_no": account["account_no"]}) == calls_before


# -- 3. deeply nested JSON ---------------------------------------------------------------------


def _nested(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


@pytest.mark.parametrize("depth", [33, 1000, 9000])
def test_deep_json_is_invalid_json_everywhere(stack, owner, depth):
    token, _ = owner
    raw = _nested(depth)
    headers = {"Content-Type": "application/json"}
    answers = [
        quick(stack, "POST", "/api/v1/session", data=raw, headers=headers),
        quick(stack, "POST", "/api/v1/sms-codes", token=token, data=raw, headers=headers),
        quick(stack, "POST", "/api/v1/payments", token=token, data=raw, headers=headers),
    ]
    path = f"/internal/v1/accounts/{new_account_no()}"
    signed = stack.signed_headers("PUT", path, raw)
    answers.append(quick(stack, "PUT", path, data=raw, headers={**signed, **headers}))
    # the usage feed takes up to 1 MiB: 100 000 levels fit
    deep = _nested(100_000)
    path = f"/internal/v1/accounts/{new_account_no()}/usage"
    signed = stack.signed_headers("PUT", path, deep)
    answers.append(quick(stack, "PUT", path, data=deep, headers={**signed, **headers}))
    for resp in answers:
        assert resp.status_code == 400, (resp.url, resp.status_code, resp.text[:200])
        assert error_of(resp)["code"] == "invalid_json"
    assert "RecursionError" not in stack.logs()


def test_json_within_the_depth_limit_is_read(stack):
    raw = json.dumps({"code": "x" * 10, "deep": json.loads(_nested(20))}).encode()
    resp = quick(stack, "POST", "/api/v1/session", data=raw, headers={"Content-Type": "application/json"})
    assert resp.status_code != 500 and resp.json()["error"]["code"] != "invalid_json"


# -- 4 and 8. body size, XML callbacks ---------------------------------------------------------


def _healthz_delays(stack, stop: threading.Event, delays: list[float]) -> None:
    while not stop.is_set():
        t0 = time.monotonic()
        try:
            requests.get(stack.api_url + "/healthz", timeout=30)
        except requests.RequestException:
            pass
        delays.append(time.monotonic() - t0)
        time.sleep(0.02)


def test_large_pay_notification_is_refused_unparsed(stack):
    depth = 600_000  # about 8.4 MB of nested elements
    raw = b"<xml>" + b"<a>" * depth + b"</a>" * depth + b"</xml>"
    stop, delays = threading.Event(), []
    watcher = threading.Thread(target=_healthz_delays, args=(stack, stop, delays))
    watcher.start()
    try:
        while not delays:
            time.sleep(0.01)
        t0 = time.monotonic()
        resp = requests.post(
            stack.api_url + "/wechat/pay/notify", data=raw, headers={"Content-Type": "text/xml"}, timeout=30
        )
        took = time.monotonic() - t0
        answered = len(delays)
        wait_until(lambda: len(delays) > answered)  # one more /healthz after the refusal
    finally:
        stop.set()
        watcher.join()
    print(
        f"\n8.4 MB Pay notification: refused in {took * 1000:.0f} ms; longest /healthz {max(delays) * 1000:.0f} ms"
        f" over {len(delays)} probes"
    )
    assert resp.status_code == 413
    assert error_of(resp)["code"] == "payload_too_large"
    assert took < 2.0
    assert max(delays) < 1.0


def test_large_official_account_push_is_refused_unparsed(stack):
    raw = b"<xml>" + b"<a>" * 20_000 + b"</a>" * 20_000 + b"</xml>"
    resp = quick(
        stack,
        "POST",
        "/wechat/official-account",
        data=raw,
        headers={"Content-Type": "text/xml"},
        params={"signature": "x", "timestamp": "1", "nonce": "n"},
    )
    assert resp.status_code == 413 and error_of(resp)["code"] == "payload_too_large"


@pytest.mark.parametrize("size", [100 * 1024, 11 * 1024 * 1024, 13 * 1024 * 1024])
def test_oversized_json_body_is_413_with_the_error_shape(stack, size):
    raw = b'{"code": "' + b"x" * size + b'"}'
    resp = stack.api("POST", "/api/v1/session", data=raw, headers={"Content-Type": "application/json"}, timeout=30)
    assert resp.status_code == 413
    assert error_of(resp)["code"] == "payload_too_large"
    assert quick(stack, "GET", "/healthz").status_code == 200


def test_oversized_chunked_body_is_413(stack):
    def chunks():
        for _ in range(40):
            yield b"x" * 4096

    resp = stack.api("POST", "/api/v1/session", data=chunks(), headers={"Content-Type": "application/json"}, timeout=30)
    assert resp.status_code == 413 and error_of(resp)["code"] == "payload_too_large"


def test_huge_declared_body_is_answered_without_reading_it(stack):
    with socket.create_connection(("127.0.0.1", stack.app_port), timeout=10) as sock:
        sock.sendall(
            b"POST /api/v1/session HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000000000\r\n\r\n{"
        )
        head = sock.recv(65536).decode("latin-1")
    assert head.startswith("HTTP/1.1 413"), head[:100]
    assert '"payload_too_large"' in head


# -- 8. control characters, impossible years, times without a zone ------------------------------


@pytest.mark.parametrize("field", ["holder_name", "address", "region", "feeder"])
def test_control_characters_in_names_are_refused(stack, field):
    account_no = new_account_no()
    body = {
        "holder_name": "张威",
        "phone": new_mobile(),
        "address": "郏县城关镇人民路1号",
        "region": "郏县城关",
        "feeder": "郏县城关1号线",
        "customer_class": "低压居民",
        "tariff": {"tou": False, "two_part": False, "max_demand": False},
        "capacity_kva": 8,
    }
    for bad in ("张\x00威", "张威\x1b[31m", "张\x7f威"):
        resp = stack.internal("PUT", f"/internal/v1/accounts/{account_no}", json={**body, field: bad})
        assert resp.status_code == 422, resp.text
        assert any(d["field"] == field for d in resp.json()["error"]["details"])
    assert stack.db.accounts.find_one({"_id": account_no}) is None


def _outage(**fields):
    start = datetime.now(UTC) + timedelta(days=1)
    return {
        "regions": [f"区域{uuid.uuid4().hex[:6]}"],
        "kind": "planned",
        "start": start.isoformat(),
        "end": (start + timedelta(hours=4)).isoformat(),
        "reason": "线路检修",
        "area": "人民路以东",
        **fields,
    }


@pytest.mark.parametrize(
    "fields",
    [
        {"start": "9999-01-01T08:00:00+08:00", "end": "9999-01-01T12:00:00+08:00"},
        {"start": "2026-12-01T08:00:00", "end": "2026-12-01T12:00:00"},
        {"start": "２０２６-12-01T08:00:00+08:00"},
        {"reason": "检修\x00"},
    ],
    ids=["year-9999", "no-timezone", "full-width", "nul"],
)
def test_bad_outage_fields_are_refused(stack, fields):
    resp = stack.internal("POST", "/internal/v1/outages", json=_outage(**fields))
    assert resp.status_code == 422, resp.text
    assert error_of(resp)["code"] == "validation_failed"


def test_valid_outage_still_published(stack):
    resp = stack.internal("POST", "/internal/v1/outages", json=_outage())
    assert resp.status_code == 201, resp.text


def test_bill_with_valid_period_still_stored(stack, owner):
    _, account = owner
    put_bill(stack, account["account_no"], "2026-03", flat_bill(1200, 5000))
