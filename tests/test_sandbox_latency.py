"""The sandbox's latency knob: every WeChat/SMS endpoint answers that late, until set back."""

from __future__ import annotations

import time

from conftest import new_mobile


def _timed_sms(stack) -> float:
    t0 = time.perf_counter()
    resp = stack.sandbox_call("POST", "/sandbox/sms", json={"mobile": new_mobile(), "text": "延迟测试"})
    assert resp.status_code == 200, resp.text
    return time.perf_counter() - t0


def test_latency_delays_every_endpoint_until_reset(stack):
    try:
        resp = stack.sandbox_call("POST", "/sandbox/latency", json={"ms": 600})
        assert resp.status_code == 200 and resp.json() == {"ms": 600.0}
        assert stack.sandbox_call("GET", "/sandbox/latency").json() == {"ms": 600.0}
        assert _timed_sms(stack) >= 0.6
        # a bad value is refused and changes nothing
        for bad in (-1, "300", True, 60_001, None):
            resp = stack.sandbox_call("POST", "/sandbox/latency", json={"ms": bad})
            assert resp.status_code == 400, (bad, resp.text)
        assert stack.sandbox_call("GET", "/sandbox/latency").json() == {"ms": 600.0}
    finally:
        resp = stack.sandbox_call("POST", "/sandbox/latency", json={"ms": 0})
        assert resp.status_code == 200
    assert _timed_sms(stack) < 0.6
