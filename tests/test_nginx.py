"""The real nginx (Debian's nginx-light) with the repository's nginx.conf, rendered for test ports,
in front of two app processes on the session's database.

What nginx answers itself (429, 413, 403) never reaches an app process: each such check also
looks for the request id in the apps' logs. A request that reached an app carries nginx's id
there and in the response.
"""

from __future__ import annotations

import http.client
import re
import shutil
import signal
import ssl
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest
import requests
from conftest import error_of
from tls_support import self_signed
from waits import wait_until

from wx_backend.bodies import LARGE_BODY as MAX_BODY
from wx_backend.embedded import free_port, wait_for_port
from wx_backend.front import NGINX_CONF, RenderError, blocks, local_values, render, render_file

NGINX = shutil.which("nginx", path="/usr/sbin:/usr/bin:/sbin:/bin")
HEX_ID = re.compile(r"^[0-9a-f]{32}$")
# the only address allowed to reach /internal/ in this test; requests from 127.0.0.1 are refused
INTERNAL_CLIENT = "127.0.0.2"

pytestmark = pytest.mark.skipif(NGINX is None, reason="nginx is missing: `make test` installs nginx-light")


def nginx_test_config(conf: Path, prefix: Path) -> subprocess.CompletedProcess:
    return subprocess.run([NGINX, "-t", "-p", str(prefix), "-c", str(conf)], capture_output=True, text=True, timeout=30)


class Front:
    """One nginx master in the foreground, its files under ``prefix``."""

    def __init__(self, prefix: Path, conf: Path, http_port: int, https_port: int, cert: Path):
        self.prefix, self.conf, self.http_port, self.https_port, self.cert = prefix, conf, http_port, https_port, cert
        self.url = f"https://127.0.0.1:{https_port}"
        self.http = requests.Session()
        self.http.trust_env = False  # REQUESTS_CA_BUNDLE would otherwise replace the test's CA
        self.http.verify = str(cert)
        self.proc: subprocess.Popen | None = None

    def start(self) -> Front:
        with open(self.prefix / "nginx.out", "ab") as out:
            self.proc = subprocess.Popen(
                [NGINX, "-p", str(self.prefix), "-c", str(self.conf), "-g", "daemon off;"],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        wait_for_port(self.https_port, timeout=10, proc=self.proc)
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def request(self, method: str, path: str, **kwargs) -> requests.Response:
        kwargs.setdefault("timeout", 30)
        return self.http.request(method, self.url + path, **kwargs)

    def access_log(self) -> str:
        path = self.prefix / "access.log"
        return path.read_text(errors="replace") if path.exists() else ""


@pytest.fixture(scope="module")
def front(stack, tmp_path_factory):
    """nginx on free ports in front of the stack's app and a second app process (same database)."""
    prefix = tmp_path_factory.mktemp("nginx")
    (prefix / "temp").mkdir()
    cert, key = self_signed(prefix, "front", "wx-backend test front")
    second = stack.start_app(free_port())
    http_port, https_port = free_port(), free_port()
    conf = render_file(
        local_values(
            prefix,
            http_port=http_port,
            https_port=https_port,
            upstreams=[f"127.0.0.1:{stack.app_port}", f"127.0.0.1:{second.port}"],
            certificate=cert,
            certificate_key=key,
            internal_allow=[INTERNAL_CLIENT],
        ),
        prefix / "nginx.conf",
    )
    checked = nginx_test_config(conf, prefix)
    assert checked.returncode == 0, checked.stderr
    server = Front(prefix, conf, http_port, https_port, cert).start()
    server.second = second
    yield server
    server.stop()
    second.stop()


def app_log(stack, port: int) -> str:
    return (stack.workdir / f"app-{port}.log").read_text(errors="replace")


def reached_app(stack, rid: str, timeout: float = 3.0) -> bool:
    """An app process logged request ``rid`` (its log line may trail the response)."""
    return wait_until(lambda: f"[{rid}]" in stack.logs(), timeout, what=f"the app's log line of {rid}")


def answered_by_nginx_alone(front, rid: str) -> bool:
    """nginx answered ``rid`` without asking any app process: its access-log line (written once the
    answer is sent) names no upstream. Read from nginx's own record, not from a quiet app log."""
    line = wait_until(
        lambda: next((line for line in front.access_log().splitlines() if f"rid={rid} " in line), None),
        what=f"nginx's log line of {rid}",
    )
    return "upstream=- " in line


# -- the template and its rendering -------------------------------------------------------------


def test_rendering_changes_only_the_marked_blocks():
    text = NGINX_CONF.read_text(encoding="utf-8")
    assert render(text, {}) == text
    assert {
        "listen_http",
        "listen_https",
        "upstream",
        "tls_certificate",
        "internal_allow",
        "pid",
        "error_log",
        "access_log",
        "temp_paths",
        "user",
    } <= set(blocks(text))
    rendered = render(text, {"upstream": ["server 127.0.0.1:1;"]})
    assert "server 127.0.0.1:1;" in rendered and "server 127.0.0.1:8001" not in rendered
    assert rendered.count("\n") == text.count("\n") - 3, "four production servers became one"
    with pytest.raises(RenderError):
        render(text, {"no_such_block": "x;"})


def test_body_limit_matches_the_app():
    """client_max_body_size in nginx.conf is the backend's LARGE_BODY (wx_backend/bodies.py)."""
    sizes = re.findall(r"^\s*client_max_body_size\s+(\d+)m;", NGINX_CONF.read_text(), re.M)
    assert sizes == [str(MAX_BODY // (1024 * 1024))]
    assert MAX_BODY % (1024 * 1024) == 0


def test_production_values_pass_nginx_t(tmp_path):
    """The file as shipped (ports 80/443, upstreams 8000-8003, allow list) is valid nginx;
    only the certificate and file locations are swapped for ones that exist here."""
    (tmp_path / "temp").mkdir()
    cert, key = self_signed(tmp_path, "front", "wx-backend test front")
    local = local_values(
        tmp_path, http_port=1, https_port=2, upstreams=[], certificate=cert, certificate_key=key, internal_allow=[]
    )
    keep = ("pid", "error_log", "access_log", "temp_paths", "tls_certificate")
    conf = render_file({name: local[name] for name in keep}, tmp_path / "nginx.conf")
    assert "listen 443 ssl http2" in conf.read_text() and "server 127.0.0.1:8003" in conf.read_text()
    checked = nginx_test_config(conf, tmp_path)
    assert checked.returncode == 0, checked.stderr


# -- the running front ------------------------------------------------------------------------


def test_http_redirects_to_https(front):
    resp = requests.get(f"http://127.0.0.1:{front.http_port}/api/v1/me?code=x", allow_redirects=False, timeout=10)
    assert resp.status_code == 301
    assert resp.headers["Location"] == "https://127.0.0.1/api/v1/me?code=x"


def test_requests_pass_with_the_request_id(front, stack):
    resp = front.request("GET", "/healthz")
    assert resp.status_code == 200 and resp.json() == {"status": "ok"}
    rid = resp.headers["X-Request-Id"]
    assert HEX_ID.match(rid), "nginx's $request_id, once (the app's copy is hidden)"
    assert reached_app(stack, rid), "the app adopted nginx's id: its log line carries it"
    assert wait_until(lambda: f"rid={rid}" in front.access_log())
    assert resp.headers["Strict-Transport-Security"].startswith("max-age=")
    assert resp.headers["X-Content-Type-Options"] == "nosniff"

    # a well-formed id from the client is kept end to end, a malformed one replaced
    mine = f"client-{uuid.uuid4().hex[:12]}"
    resp = front.request("GET", "/healthz", headers={"X-Request-Id": mine})
    assert resp.headers["X-Request-Id"] == mine and reached_app(stack, mine)
    resp = front.request("GET", "/healthz", headers={"X-Request-Id": "bad id\twith spaces"})
    assert HEX_ID.match(resp.headers["X-Request-Id"])

    # a login (POST) and an authenticated GET go through; the log shows paths, not query strings
    resp = front.request(
        "POST",
        "/api/v1/session?trace=secret-in-query",
        json={"code": stack.login_code(f"o_front_{uuid.uuid4().hex[:12]}")},
    )
    assert resp.status_code == 200, resp.text
    token = resp.json()["token"]
    resp = front.request("GET", "/api/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 200 and reached_app(stack, resp.headers["X-Request-Id"])
    assert wait_until(lambda: '"POST /api/v1/session HTTP/1.1" 200' in front.access_log())
    assert "secret-in-query" not in front.access_log()


def test_sms_limit_answers_429_after_the_burst(front, stack):
    body = {"mobile": f"139{uuid.uuid4().int % 10**8:08d}", "purpose": "bind_account"}
    responses = [front.request("POST", "/api/v1/sms-codes", json=body) for _ in range(9)]
    rids = [r.headers["X-Request-Id"] for r in responses]
    # 5r/m with burst 5: the first six reach the backend (whatever it answers), the rest do not
    for resp, rid in zip(responses[:6], rids[:6], strict=True):
        assert reached_app(stack, rid), (resp.status_code, resp.text)
    for resp, rid in zip(responses[6:], rids[6:], strict=True):
        assert resp.status_code == 429
        assert resp.headers["Content-Type"].startswith("application/json")
        assert error_of(resp) == {"code": "too_many_requests", "message": "操作过于频繁，请稍后再试"}
        assert answered_by_nginx_alone(front, rid)


def test_oversize_upload_gets_413(front, stack):
    resp = front.request(
        "POST", "/api/v1/uploads", data=b"\0" * (13 * 1024 * 1024), headers={"Content-Type": "application/pdf"}
    )
    assert resp.status_code == 413
    assert error_of(resp) == {"code": "payload_too_large", "message": "上传内容过大"}
    assert answered_by_nginx_alone(front, resp.headers["X-Request-Id"])
    # under nginx's limit but over the app's upload cap: the app answers its own precise 413,
    # after reading the body, so nginx keeps the process in its upstream
    token = stack.login(f"o_front_{uuid.uuid4().hex[:12]}")
    resp = front.request(
        "POST",
        "/api/v1/uploads",
        data=b"\0" * (11 * 1024 * 1024),
        headers={"Content-Type": "application/pdf", "Authorization": f"Bearer {token}"},
    )
    assert resp.status_code == 413 and error_of(resp)["code"] == "payload_too_large", resp.text
    assert reached_app(stack, resp.headers["X-Request-Id"])
    # under both limits: the body reaches the app, which checks the login before anything else
    resp = front.request(
        "POST", "/api/v1/uploads", data=b"\0" * (9 * 1024 * 1024), headers={"Content-Type": "application/pdf"}
    )
    assert resp.status_code == 401, resp.text
    assert reached_app(stack, resp.headers["X-Request-Id"])


def test_internal_only_from_allowed_networks(front, stack):
    resp = front.request("GET", "/internal/v1/accounts/1234567890")
    assert resp.status_code == 403
    assert error_of(resp) == {"code": "forbidden", "message": "无权进行此操作"}
    assert answered_by_nginx_alone(front, resp.headers["X-Request-Id"])

    # the allowed address reaches the app (which then checks the signature itself)
    context = ssl.create_default_context(cafile=str(front.cert))
    conn = http.client.HTTPSConnection(
        "127.0.0.1", front.https_port, source_address=(INTERNAL_CLIENT, 0), context=context, timeout=10
    )
    try:
        conn.request("GET", "/internal/v1/accounts/1234567890")
        allowed = conn.getresponse()
        allowed.read()
    finally:
        conn.close()
    assert reached_app(stack, allowed.getheader("X-Request-Id")), allowed.status


def test_killed_app_process_loses_no_get(front, stack):
    """SIGKILL one of the two app processes under steady GET traffic: every GET answers 200
    (nginx passed the failed ones to the other process) and the survivor keeps serving."""
    token = stack.login(f"o_front_{uuid.uuid4().hex[:12]}")
    auth = {"Authorization": f"Bearer {token}"}
    second = front.second

    warmup = [front.request("GET", "/api/v1/me", headers=auth) for _ in range(20)]
    assert all(r.status_code == 200 for r in warmup)
    warm_ids = [f"[{r.headers['X-Request-Id']}]" for r in warmup]
    assert wait_until(lambda: all(rid in stack.logs() for rid in warm_ids))
    on_second = sum(rid in app_log(stack, second.port) for rid in warm_ids)
    assert 0 < on_second < len(warm_ids), "both processes take traffic before the kill"

    results: list[tuple[float, int, str]] = []
    stop = threading.Event()

    def fire() -> None:
        session = requests.Session()
        session.trust_env = False
        session.verify = str(front.cert)
        while not stop.is_set():
            resp = session.get(front.url + "/api/v1/me", headers=auth, timeout=10)
            results.append((time.monotonic(), resp.status_code, resp.headers.get("X-Request-Id", "")))

    threads = [threading.Thread(target=fire) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        # counted, not timed: a loaded machine answers fewer requests per second
        assert wait_until(lambda: len(results) >= 20, timeout=60), len(results)
        killed_at = time.monotonic()
        second.proc.send_signal(signal.SIGKILL)
        second.proc.wait(5)
        assert wait_until(lambda: sum(r[0] > killed_at for r in results) >= 40, timeout=60), len(results)
    finally:
        stop.set()
        for thread in threads:
            thread.join(15)

    after = [r for r in results if r[0] > killed_at]
    assert [status for _, status, _ in results if status != 200] == []
    # the survivor served what came after the kill
    assert wait_until(lambda: all(f"[{rid}]" in app_log(stack, stack.app_port) for _, _, rid in after[-20:]))
    assert second.proc.poll() is not None
    # nginx did retry: some request's log line names both upstreams
    assert wait_until(lambda: re.search(r"upstream=127\.0\.0\.1:\d+, 127\.0\.0\.1:\d+", front.access_log()))
    assert stack.api("GET", "/healthz").status_code == 200
