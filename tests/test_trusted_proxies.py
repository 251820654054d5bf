"""Forwarded headers are believed only from WX_TRUSTED_PROXIES (the nginx in front)."""

from __future__ import annotations

import re

import requests

from wx_backend.embedded import free_port


def test_request_id_from_a_trusted_proxy_is_adopted(stack):
    # the stack's app trusts loopback, where nginx connects from
    resp = stack.api("GET", "/healthz", headers={"X-Request-Id": "from-the-proxy-0001"})
    assert resp.headers["X-Request-Id"] == "from-the-proxy-0001"


def test_request_id_from_anyone_else_is_replaced(stack):
    port = free_port()
    app = stack.start_app(port, extra_env={"WX_TRUSTED_PROXIES": "10.255.255.1"})
    try:
        resp = requests.get(
            f"http://127.0.0.1:{port}/healthz",
            timeout=10,
            headers={"X-Request-Id": "spoofed-by-client-0001", "X-Forwarded-For": "1.2.3.4"},
        )
        assert resp.status_code == 200
        rid = resp.headers["X-Request-Id"]
        assert rid != "spoofed-by-client-0001" and re.fullmatch(r"[0-9a-f]{32}", rid)
        app.stop()
        log = app.log_path.read_text(errors="replace")
        assert f"[{rid}]" in log and "spoofed-by-client-0001" not in log
    finally:
        app.stop()
