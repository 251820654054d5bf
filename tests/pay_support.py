"""Helpers for the WeChat Pay tests: the gateway run in-process, a notification receiver."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from wx_backend.wechat.http import WeChatHTTP
from wx_backend.wechat.pay import PayAPI


def gateway(stack, **kwargs) -> PayAPI:
    options = {
        "appid": stack.env["WX_MP_APPID"],
        "mch_id": stack.env["WX_PAY_MCH_ID"],
        "key": stack.env["WX_PAY_API_KEY"],
        **kwargs,
    }
    return PayAPI(WeChatHTTP(stack.sandbox_url, 2), **options)


def run(coro_factory: Callable):
    """Run ``coro_factory()`` on a fresh event loop (each test is its own short-lived client)."""

    async def main():
        return await coro_factory()

    return asyncio.run(main())


def trade_no(prefix: str = "T") -> str:
    return f"{prefix}{uuid.uuid4().hex[:20]}"


def in_an_hour() -> datetime:
    return datetime.now(UTC) + timedelta(hours=1)


def order_view(stack, out_trade_no: str) -> dict:
    resp = stack.sandbox_call("GET", "/sandbox/pay/orders", params={"out_trade_no": out_trade_no})
    assert resp.status_code == 200, resp.text
    return resp.json()


def auth_code(stack, behaviour: str, openid: str | None = None) -> str:
    resp = stack.sandbox_call(
        "POST",
        "/sandbox/pay/auth-code",
        json={"openid": openid or f"o_{uuid.uuid4().hex[:12]}", "behaviour": behaviour},
    )
    assert resp.status_code == 200, resp.text
    return resp.json()["auth_code"]


class NotifyReceiver:
    """A merchant notify URL on a free port. ``decide(body) -> bool`` chooses the reply."""

    def __init__(self, decide: Callable[[bytes], bool] | None = None):
        self.bodies: list[tuple[float, bytes]] = []
        self.headers: list[dict[str, str]] = []  # of each body, in the same order
        self.decide = decide or (lambda body: True)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.headers.append(dict(self.headers))
                receiver.bodies.append((time.monotonic(), body))
                ok = receiver.decide(body)
                reply = (
                    (
                        b"<xml><return_code><![CDATA[SUCCESS]]></return_code>"
                        b"<return_msg><![CDATA[OK]]></return_msg></xml>"
                    )
                    if ok
                    else b"<xml><return_code><![CDATA[FAIL]]></return_code><return_msg>not yet</return_msg></xml>"
                )
                self.send_response(200)
                self.send_header("Content-Type", "text/xml")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/wechat/pay/notify"

    def __enter__(self) -> NotifyReceiver:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


BEIJING_TZ = "Asia/Shanghai"


@contextmanager
def bill_clock(stack, at: datetime) -> Iterator[None]:
    """The sandbox serves bills as at ``at`` (an aware time) inside the block."""
    stack.sandbox_call("POST", "/sandbox/pay/clock", json={"now": at.isoformat()}).raise_for_status()
    try:
        yield
    finally:
        stack.sandbox_call("DELETE", "/sandbox/pay/clock").raise_for_status()


def bills_ready(day) -> datetime:
    """10:05 Beijing time the day after ``day``: WeChat's bill of ``day`` can be fetched."""
    from zoneinfo import ZoneInfo

    return datetime(day.year, day.month, day.day, 10, 5, tzinfo=ZoneInfo(BEIJING_TZ)) + timedelta(days=1)
