"""A stack with a real mail server (aiosmtpd, STARTTLS required) and a webhook receiver, for the
智能交费 and 电子发票 tests: customers who follow the official account, prepaid accounts, PDFs."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from conftest import Stack, bind_account, put_account
from tls_support import self_signed
from waits import wait_until

from wx_backend.embedded import free_port
from wx_backend.security import request_signature
from wx_backend.services.notifications import load_message_templates

CATALOGUE = load_message_templates()


class MailServer:
    """aiosmtpd on a loopback port, STARTTLS required; keeps every message it accepts."""

    def __init__(self, cert: Path, key: Path):
        import ssl

        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(cert, key)
        self.port = free_port()
        self.messages: list[email.message.EmailMessage] = []
        self.controller: Controller | None = None

    async def handle_DATA(self, server, session, envelope) -> str:
        message = email.message_from_bytes(envelope.original_content or envelope.content, policy=email.policy.default)
        message["X-Envelope-To"] = ",".join(envelope.rcpt_tos)
        message["X-Was-TLS"] = "yes" if session.ssl else "no"
        self.messages.append(message)
        return "250 OK"

    def start(self) -> MailServer:
        self.controller = Controller(
            self, hostname="127.0.0.1", port=self.port, tls_context=self.context, require_starttls=True
        )
        self.controller.start()
        return self

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    def to(self, address: str) -> list[email.message.EmailMessage]:
        return [m for m in self.messages if address in m["X-Envelope-To"]]


class HookReceiver:
    """The marketing system's webhook endpoint: checks signatures, keeps each event; can be down."""

    def __init__(self, secret: str):
        receiver = self
        self.events: list[dict[str, Any]] = []
        self.down = False
        self.refused = 0
        self.lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                good = request_signature(
                    secret, "POST", self.path, self.headers["X-Timestamp"], self.headers["X-Nonce"], body
                ) == self.headers.get("X-Signature")
                with receiver.lock:
                    if receiver.down or not good:
                        receiver.refused += 1
                        self.send_response(503 if good else 401)
                    else:
                        receiver.events.append({"id": self.headers["X-Event-Id"], **json.loads(body)})
                        self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/wx-backend"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def of(self, event: str) -> list[dict[str, Any]]:
        with self.lock:
            return [e for e in self.events if e["event"] == event]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def hall(workdir, mongodb_uri):
    """A stack (one per test module) whose invoice mail goes to a real local SMTP server
    (STARTTLS) and whose webhook goes to a receiver: ``(stack, mail, hooks)``."""
    folder = workdir / f"hall-{uuid.uuid4().hex[:8]}"
    folder.mkdir()
    cert, key = self_signed(folder, "smtp")
    mail = MailServer(cert, key).start()
    hooks = HookReceiver("test-internal-secret")
    stack = Stack(
        folder,
        mongodb_uri,
        extra_env={
            "WX_SMTP_URL": f"smtp+starttls://127.0.0.1:{mail.port}",
            "WX_SMTP_CA_FILE": str(cert),
            "WX_SMTP_FROM": "fapiao@hall.example.com",
            "WX_WEBHOOK_URL": hooks.url,
            "WX_OVERDUE_REMIND_DAYS": "3",
        },
    ).start()
    try:
        yield stack, mail, hooks
    finally:
        stack.stop()
        mail.stop()
        hooks.close()


# the outbox and the worker's passes take longer than a payment's state: a longer default wait


def follower(stack) -> dict[str, Any]:
    """A logged-in user who follows the official account (template messages reach them)."""
    unionid, oa_openid, openid = (f"{p}_{uuid.uuid4().hex[:16]}" for p in ("u", "oa", "o"))
    token = stack.login(openid, unionid)
    resp = stack.sandbox_call("POST", "/sandbox/oa/follow", json={"openid": oa_openid, "unionid": unionid})
    assert resp.status_code == 200, resp.text
    user = wait_until(lambda: (u := stack.db.users.find_one({"mp_openid": openid})) and u.get("oa_openid") and u)
    return {"token": token, "openid": openid, "oa_openid": oa_openid, "user_id": user["_id"]}


def customer(stack, **account_fields) -> dict[str, Any]:
    """A follower with one bound account: the follower's fields plus ``account_no``."""
    cust = follower(stack)
    account = put_account(stack, **account_fields)
    bind_account(stack, cust["token"], account)
    return {**cust, "account_no": account["account_no"]}


def oa_messages(stack, oa_openid: str, message: str | None = None) -> list[dict[str, Any]]:
    """Template messages the sandbox accepted for ``oa_openid`` (of one catalogue message)."""
    got = stack.sandbox_call("GET", "/sandbox/oa/messages", params={"touser": oa_openid}).json()["messages"]
    if message:
        got = [m for m in got if m["template_id"] == CATALOGUE[message].official_account.template_id]
    return got


def settled(stack, user_id) -> bool:
    """Every message queued for the user has reached a final state."""
    return stack.db.outbox.count_documents({"user_id": user_id, "status": {"$in": ["queued", "sending"]}}) == 0


def iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).replace(microsecond=0).isoformat()


def invoice_pdf(text: str = "电子发票") -> bytes:
    from weasyprint import HTML

    return HTML(string=f"<html><body><h1>{text}</h1><p>郏县供电</p></body></html>").write_pdf()
