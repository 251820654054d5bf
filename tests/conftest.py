"""Fixtures that start real servers: FerretDB (or MONGODB_URI), the WeChat sandbox and the backend.

Tests talk to them over HTTP exactly as the mini-program, WeChat and the marketing system do.
"""

from __future__ import annotations

import atexit
import base64
import json as jsonlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
from pymongo import MongoClient

from wx_backend.embedded import ROOT, database_uri, free_port, wait_for_port
from wx_backend.security import request_signature

TEST_DATA_KEY = base64.b64encode(b"test-data-key-0123456789abcdef!!").decode()
# WeChat Pay v3 keys of the session: created by the first process that needs them (test env)
PAY_V3_KEYS = Path(tempfile.mkdtemp(prefix="wx-pay-v3-keys-"))
atexit.register(shutil.rmtree, PAY_V3_KEYS, True)

# Every bearer token, mobile and ID number the helpers obtain or make up: none may ever appear
# in a log line of any process of the session (checked by ``_no_secrets_in_logs``).
SECRETS: set[str] = set()


def register_secret(value):
    """Remember ``value`` as a secret the logs must never show; returns it."""
    if value:
        SECRETS.add(str(value))
    return value


def base_env(db_name: str, mongodb_uri: str, sandbox_port: int, app_port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WX_")}
    env.update(
        {
            "WX_ENV": "test",
            "WX_BIND": "127.0.0.1",
            "MONGODB_URI": mongodb_uri,
            "WX_DB_NAME": db_name,
            # bounds every operation, queueing on a loaded test machine included; the outage tests use less
            "WX_DB_TIMEOUT_MS": "20000",
            "WX_PORT": str(app_port),
            "WX_SANDBOX_PORT": str(sandbox_port),
            "WX_INTERNAL_SECRET": "test-internal-secret",
            "WX_DATA_KEY": TEST_DATA_KEY,
            "WX_WECHAT_API_BASE": f"http://127.0.0.1:{sandbox_port}",
            "WX_WECHAT_PAY_BASE": f"http://127.0.0.1:{sandbox_port}",
            "WX_WECHAT_TIMEOUT": "2",
            "WX_SANDBOX_TIMEOUT_DELAY": "4",
            "WX_SANDBOX_NOTIFY_SCALE": "0.01",
            "WX_SANDBOX_PASSWORD_DELAY": "1",
            "WX_SANDBOX_TIME_SCALE": "0.2",  # WeChat's 45 s and 15 s payment-code times as 9 s and 3 s
            "WX_PAY_TIME_SCALE": "0.2",
            "WX_SANDBOX_REFUND_DELAY": "0.5",
            "WX_MP_APPID": "wxmptest00000001",
            "WX_MP_SECRET": "mp-test-secret",
            "WX_OA_APPID": "wxoatest00000001",
            "WX_OA_SECRET": "oa-test-secret",
            "WX_OA_TOKEN": "oatesttoken",
            "WX_PAY_MCH_ID": "1900000109",
            "WX_PAY_API_KEY": "testpaykey0123456789abcdefghijkl",
            "WX_PAY_APIV3_KEY": "testapiv3key0123456789abcdefghij",
            "WX_PAY_MCH_SERIAL": "7A1C4E2B9D0F3A5C6E8B1D2F4A6C8E0B2D4F6A8C",
            "WX_PAY_V3_PRIVATE_KEY": str(PAY_V3_KEYS / "apiclient_key.pem"),
            "WX_PAY_PUBLIC_KEY": str(PAY_V3_KEYS / "wechatpay_public_key.pem"),
            "WX_PAY_PUBLIC_KEY_ID": "PUB_KEY_ID_0119000001092026113000000000000001",
            "WX_SANDBOX_PAY_PRIVATE_KEY": str(PAY_V3_KEYS / "sandbox_wechatpay_key.pem"),
            "WX_PUBLIC_BASE": f"http://127.0.0.1:{app_port}",
            "WX_SANDBOX_CALLBACK_BASE": f"http://127.0.0.1:{app_port}",
            "WX_TSA_URL": f"http://127.0.0.1:{sandbox_port}/tsa",
            "WX_OAUTH_BASE": f"http://127.0.0.1:{sandbox_port}",
            "WX_H5_BRIDGE_STANDIN": f"http://127.0.0.1:{sandbox_port}/sandbox/jsbridge.js",
            "WX_EMBEDDED_WORKERS": "1",
            "WX_SMS_PROVIDER": "sandbox",
            "WX_OUTBOX_RETRY_BASE": "0.2",
            "WX_OUTBOX_POLL": "0.5",
            "WX_PAY_POLL_INTERVAL": "0.3",
            "WX_PAY_POLL_WINDOW": "4",
            "WX_PAY_QUERY_DELAY": "0.5",
            "WX_PAY_FOLLOWUP_INTERVAL": "1",
            "WX_SUPPLY_INTERVAL": "0.5",
            "WX_LOG_LEVEL": "INFO",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


class Process:
    """A child Python process of the project, its output in a log file."""

    def __init__(self, args: list[str], env: dict[str, str], port: int, log_path: Path):
        self.args, self.env, self.port, self.log_path = args, env, port, log_path
        self.proc: subprocess.Popen | None = None

    def start(self) -> Process:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, *self.args],
                env=self.env,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        wait_for_port(self.port, proc=self.proc)
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Stack:
    """A running backend + sandbox on one database, with helpers to call them."""

    def __init__(
        self, workdir: Path, mongodb_uri: str, db_name: str | None = None, extra_env: dict[str, str] | None = None
    ):
        self.workdir = workdir
        self.mongodb_uri = mongodb_uri
        self.db_name = db_name or f"t_{uuid.uuid4().hex[:10]}"
        self.sandbox_port = free_port()
        self.app_port = free_port()
        self.env = base_env(self.db_name, mongodb_uri, self.sandbox_port, self.app_port)
        self.env.update(extra_env or {})
        self.sandbox = Process(["-m", "wx_backend.sandbox"], self.env, self.sandbox_port, workdir / "sandbox.log")
        self.apps: list[Process] = []
        self.client = MongoClient(mongodb_uri, tz_aware=True, serverSelectionTimeoutMS=5000)
        self.db = self.client[self.db_name]
        self.http = requests.Session()

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.app_port}"

    @property
    def sandbox_url(self) -> str:
        return f"http://127.0.0.1:{self.sandbox_port}"

    def start(self) -> Stack:
        self.sandbox.start()
        self.apps.append(self.start_app(self.app_port))
        self.wait_for_indexes(self.apps[0])
        return self

    def wait_for_indexes(self, proc: Process, timeout: float = 30.0) -> None:
        """Start-up creates the indexes in the background; tests relying on unique indexes
        (idempotency, locks) must not run before they exist."""
        deadline = time.monotonic() + timeout
        while "indexes ready" not in proc.log_path.read_text(errors="replace"):
            assert time.monotonic() < deadline, "indexes not created in time"
            time.sleep(0.05)

    def start_app(self, port: int, extra_env: dict[str, str] | None = None) -> Process:
        env = {**self.env, "WX_PORT": str(port), **(extra_env or {})}
        return Process(["-m", "scripts.serve"], env, port, self.workdir / f"app-{port}.log").start()

    def stop(self) -> None:
        for proc in self.apps:
            proc.stop()
        self.sandbox.stop()
        self.client.close()

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.workdir.glob("*.log")))

    # -- calling the servers ------------------------------------------------------
    def api(self, method: str, path: str, token: str | None = None, **kwargs) -> requests.Response:
        headers = kwargs.pop("headers", {})
        if token:
            headers["Authorization"] = f"Bearer {token}"
        kwargs.setdefault("timeout", 30)
        return self.http.request(method, self.api_url + path, headers=headers, **kwargs)

    def sandbox_call(self, method: str, path: str, **kwargs) -> requests.Response:
        kwargs.setdefault("timeout", 30)
        return self.http.request(method, self.sandbox_url + path, **kwargs)

    def login_code(self, openid: str, unionid: str | None = None) -> str:
        resp = self.sandbox_call("POST", "/sandbox/mp/login-code", json={"openid": openid, "unionid": unionid})
        resp.raise_for_status()
        return resp.json()["code"]

    def login(self, openid: str | None = None, unionid: str | None = None) -> str:
        """Log a customer in through the sandbox; returns the bearer token."""
        openid = openid or f"o_{uuid.uuid4().hex[:20]}"
        resp = self.api("POST", "/api/v1/session", json={"code": self.login_code(openid, unionid)})
        assert resp.status_code == 200, resp.text
        return register_secret(resp.json()["token"])

    def signed_headers(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        *,
        secret: str | None = None,
        timestamp: int | str | None = None,
        nonce: str | None = None,
    ) -> dict[str, str]:
        """The X-Timestamp / X-Nonce / X-Signature headers the marketing system sends (docs/internal-api.md)."""
        ts = str(int(time.time()) if timestamp is None else timestamp)
        nonce = nonce or uuid.uuid4().hex
        secret = self.env["WX_INTERNAL_SECRET"] if secret is None else secret
        return {
            "X-Timestamp": ts,
            "X-Nonce": nonce,
            "X-Signature": request_signature(secret, method, urlsplit(path).path, ts, nonce, body),
        }

    def internal(
        self,
        method: str,
        path: str,
        json=None,
        *,
        secret: str | None = None,
        timestamp: int | str | None = None,
        nonce: str | None = None,
    ) -> requests.Response:
        """Call ``/internal/v1`` signed like the marketing system (fresh nonce, current time by default)."""
        body = b"" if json is None else jsonlib.dumps(json, ensure_ascii=False).encode()
        headers = self.signed_headers(method, path, body, secret=secret, timestamp=timestamp, nonce=nonce)
        if json is not None:
            headers["Content-Type"] = "application/json"
        return self.api(method, path, data=body, headers=headers)

    def sms_texts(self, mobile: str) -> list[str]:
        """The texts the sandbox phone ``mobile`` received, oldest first."""
        resp = self.sandbox_call("GET", "/sandbox/sms", params={"mobile": mobile})
        resp.raise_for_status()
        return [m["text"] for m in resp.json()["messages"]]

    def last_sms_code(self, mobile: str) -> str:
        """The 6-digit code in the newest text to ``mobile``."""
        texts = self.sms_texts(mobile)
        assert texts, f"no text received by {mobile}"
        return re.search(r"[0-9]{6}", texts[-1]).group(0)

    def fault(self, endpoint: str, fault: str, count: int = 1, match: str | None = None) -> None:
        """Make the sandbox misbehave; ``match`` aims Pay faults at one ``out_trade_no``."""
        resp = self.sandbox_call(
            "POST", "/sandbox/faults", json={"endpoint": endpoint, "fault": fault, "count": count, "match": match}
        )
        assert resp.status_code == 200, resp.text


@pytest.fixture(scope="session")
def workdir():
    path = Path(tempfile.mkdtemp(prefix="wx-tests-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


_SECRET_LIKE = re.compile(r"[A-Za-z0-9_-]{11,}")


def secrets_in_logs(folder: Path) -> list[str]:
    """Log lines under ``folder`` showing a registered secret (a token, a mobile, an ID number)."""
    found = []
    for path in sorted(folder.rglob("*.log")):
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            for word in _SECRET_LIKE.findall(line):
                # a mobile may also hide inside a longer run of digits or letters
                windows = {word} | {word[i : i + 11] for i in range(len(word) - 10)}
                hit = windows & SECRETS
                if hit:
                    found.append(f"{path.name}:{number}: {sorted(hit)[0][:6]}... in {line[:160]}")
    return found


@pytest.fixture(scope="session", autouse=True)
def _no_secrets_in_logs(workdir):
    """After the whole session, every log of every process (app, workers, sandbox, nginx) is
    searched for the tokens, mobiles and ID numbers the tests used: any hit fails the run."""
    yield
    leaks = secrets_in_logs(workdir)
    assert not leaks, f"{len(leaks)} log lines show a secret:\n" + "\n".join(leaks[:20])


@pytest.fixture(scope="session")
def mongodb_uri(workdir):
    """MONGODB_URI if set, else a FerretDB of the session's own on a free port."""
    with database_uri(workdir / "ferretdb") as uri:
        yield uri


@pytest.fixture(scope="session")
def session_stack(workdir, mongodb_uri):
    s = Stack(workdir / "stack", mongodb_uri)
    s.workdir.mkdir()
    s.start()
    yield s
    s.stop()


@pytest.fixture(scope="session")
def stack(session_stack):
    """The session's backend and sandbox (WeChat Pay v2); a module may choose per test instead."""
    return session_stack


@pytest.fixture(scope="session")
def stack_v3(workdir, mongodb_uri):
    """A second backend and sandbox whose merchant uses WeChat Pay API v3 (``WX_PAY_API=v3``)."""
    s = Stack(workdir / "stack-v3", mongodb_uri, extra_env={"WX_PAY_API": "v3"})
    s.workdir.mkdir()
    s.start()
    yield s
    s.stop()


@pytest.fixture(autouse=True)
def _clear_faults(request):
    # the stack is taken now: a module may make ``stack`` a per-test choice (v2 or v3), gone at teardown
    used = request.getfixturevalue("stack") if "stack" in request.fixturenames else None
    yield
    if used is not None:
        used.sandbox_call("DELETE", "/sandbox/faults")


def error_of(resp: requests.Response) -> dict:
    """The ``{"code", "message"}`` of an error response, checking the one error shape."""
    body = resp.json()
    assert set(body) == {"error"}, body
    assert isinstance(body["error"]["code"], str) and body["error"]["message"], body
    assert resp.headers.get("X-Request-Id"), "every response carries a request id"
    return body["error"]


def new_account_no() -> str:
    """A fresh 10-digit account number (tests share one database)."""
    return f"9{uuid.uuid4().int % 10**9:09d}"


def new_mobile() -> str:
    return register_secret(f"139{uuid.uuid4().int % 10**8:08d}")


def put_account(stack: Stack, account_no: str | None = None, **fields) -> dict:
    """Create an account through ``PUT /internal/v1/accounts/{no}``; returns what was sent (with
    ``account_no`` and the clear ``phone``)."""
    account_no = account_no or new_account_no()
    body = {
        "holder_name": "张威",
        "phone": new_mobile(),
        "address": "河南省平顶山市郏县城关镇人民路1号",
        "region": "郏县城关",
        "feeder": "郏县城关1号线",
        "customer_class": "低压居民",
        "tariff": {"tou": True, "two_part": False, "max_demand": False},
        "capacity_kva": 8,
        "balance_fen": 0,
        **fields,
    }
    register_secret(body["phone"])
    resp = stack.internal("PUT", f"/internal/v1/accounts/{account_no}", json=body)
    assert resp.status_code in (200, 201), resp.text
    return {"account_no": account_no, **body}


def bind_account(stack: Stack, token: str, account: dict) -> dict:
    """Bind ``account`` (from ``put_account``) to the user of ``token`` through the SMS flow."""
    resp = stack.api(
        "POST", "/api/v1/sms-codes", token=token, json={"purpose": "bind_account", "account_no": account["account_no"]}
    )
    assert resp.status_code == 201, resp.text
    resp = stack.api(
        "POST",
        "/api/v1/accounts",
        token=token,
        json={
            "account_no": account["account_no"],
            "holder_name": account["holder_name"],
            "sms_code": stack.last_sms_code(account["phone"]),
        },
    )
    assert resp.status_code in (200, 201), resp.text
    return resp.json()["account"]


def sms_limit_key(mobile: str) -> str:
    """The start of the ``rate_limits`` keys of a mobile (``sms:mobile:{lookup hash}:``, then the
    requesting user's id), the hash under the test data key."""
    from wx_backend.security import DataProtector

    return "sms:mobile:" + DataProtector(base64.b64decode(TEST_DATA_KEY)).lookup_hash(mobile, "phone") + ":"


def skip_sms_interval(stack: Stack, mobile: str) -> None:
    """Test set-up: pretend the last text to ``mobile`` (from anyone) went out over a minute ago."""
    from datetime import UTC, datetime, timedelta

    stack.db.rate_limits.update_many(
        {"_id": {"$regex": "^" + re.escape(sms_limit_key(mobile))}},
        {"$set": {"last_at": datetime.now(UTC) - timedelta(seconds=61)}},
    )
