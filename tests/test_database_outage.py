"""The database goes away and comes back: readiness and API answer 503, then recover unaided."""

from __future__ import annotations

import os

import pytest
from conftest import Stack, error_of
from waits import wait_until

from wx_backend.embedded import FerretDB

pytestmark = pytest.mark.skipif(bool(os.environ.get("MONGODB_URI")), reason="stops and restarts its own FerretDB")


def test_database_stopped_then_restarted(tmp_path):
    server = FerretDB(tmp_path / "db").start()
    stack = Stack(tmp_path, server.uri, extra_env={"WX_DB_TIMEOUT_MS": "1500"})
    stack.start()
    try:
        token = stack.login("o_outage")
        assert stack.api("GET", "/readyz").status_code == 200

        server.stop()
        resp = stack.api("GET", "/readyz")
        assert resp.status_code == 503
        resp = stack.api("GET", "/api/v1/me", token=token)
        assert resp.status_code == 503
        assert error_of(resp)["code"] == "database_unavailable"
        assert stack.api("GET", "/healthz").status_code == 200, "the process itself is alive"

        server.start()  # same port, same data
        assert wait_until(lambda: stack.api("GET", "/readyz").status_code == 200)
        resp = stack.api("GET", "/api/v1/me", token=token)
        assert resp.status_code == 200, "the session survived: same data, no restart of the app"
        assert "Traceback" not in stack.logs()
    finally:
        stack.stop()
        server.stop()
