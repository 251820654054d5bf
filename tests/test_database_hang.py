"""A database that keeps its connections open but stops answering (the process is stopped with
SIGSTOP): requests fail fast with 503 within WX_DB_TIMEOUT_MS, the process stays responsive,
and everything works again once the server resumes."""

from __future__ import annotations

import os
import signal
import time

import pytest
from conftest import Stack, error_of

from wx_backend.embedded import FerretDB

pytestmark = pytest.mark.skipif(bool(os.environ.get("MONGODB_URI")), reason="stops its own FerretDB")


def test_hung_database_fails_fast(tmp_path):
    server = FerretDB(tmp_path / "db").start()
    stack = Stack(tmp_path, server.uri, extra_env={"WX_DB_TIMEOUT_MS": "1500"})
    stack.start()
    timeout = int(stack.env["WX_DB_TIMEOUT_MS"]) / 1000
    stopped = False
    try:
        token = stack.login("o_hang")
        assert stack.api("GET", "/api/v1/me", token=token).status_code == 200

        os.kill(server.proc.pid, signal.SIGSTOP)
        stopped = True
        longest = 0.0
        for path in ("/api/v1/me", "/api/v1/accounts", "/api/v1/me"):
            t0 = time.monotonic()
            resp = stack.api("GET", path, token=token, timeout=30)
            took = time.monotonic() - t0
            longest = max(longest, took)
            assert resp.status_code == 503, resp.text
            assert error_of(resp)["code"] == "database_unavailable"
        t0 = time.monotonic()
        assert stack.api("GET", "/readyz", timeout=30).status_code == 503
        longest = max(longest, time.monotonic() - t0)
        t0 = time.monotonic()
        assert stack.api("GET", "/healthz", timeout=30).status_code == 200
        healthz = time.monotonic() - t0
        print(
            f"\nhung database: slowest 503 after {longest:.2f} s (WX_DB_TIMEOUT_MS {timeout:.1f} s), "
            f"/healthz {healthz * 1000:.0f} ms"
        )
        assert longest < timeout + 1.0, f"{longest:.2f} s with WX_DB_TIMEOUT_MS {timeout} s"
        assert healthz < 0.5

        os.kill(server.proc.pid, signal.SIGCONT)
        stopped = False
        deadline = time.monotonic() + 30
        while stack.api("GET", "/api/v1/me", token=token).status_code != 200:
            assert time.monotonic() < deadline, "did not recover after the database resumed"
            time.sleep(0.2)
    finally:
        if stopped:
            os.kill(server.proc.pid, signal.SIGCONT)
        stack.stop()
        server.stop()
