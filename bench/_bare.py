"""Comparison servers for the benchmarks: the least a Tornado process can do for the same answer.

    python bench/_bare.py json PORT FILE   any GET answers the JSON in FILE (parsed once,
                                           serialized per request, as a handler would)
    python bench/_bare.py wechatpy PORT    POST creates a JSAPI order with wechatpy's
                                           WeChatPay.order.create, called synchronously in the
                                           handler (the blocking way), at WX_WECHAT_PAY_BASE

Settings come from the same ``WX_*`` variables as the backend (merchant number, key, AppID).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import sys

import tornado.web


class FixedJSONHandler(tornado.web.RequestHandler):
    def get(self) -> None:
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.finish(json.dumps(self.settings["data"], ensure_ascii=False))


class BlockingOrderHandler(tornado.web.RequestHandler):
    def post(self) -> None:
        pay = self.settings["pay"]
        openid = json.loads(self.request.body or b"{}").get("openid", "o_bare")
        result = pay.order.create(
            trade_type="JSAPI",
            body="电费缴纳",
            total_fee=100,
            client_ip="127.0.0.1",
            notify_url="http://127.0.0.1/wechat/pay/notify",
            user_id=openid,
            out_trade_no=secrets.token_hex(16),
        )
        params = pay.jsapi.get_jsapi_params(result["prepay_id"])
        self.set_status(201)
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.finish(json.dumps({"pay_params": params}))


def make_app(mode: str, extra: list[str]) -> tornado.web.Application:
    if mode == "json":
        with open(extra[0], encoding="utf-8") as f:
            return tornado.web.Application([(r"/.*", FixedJSONHandler)], data=json.load(f))
    if mode == "wechatpy":
        from wechatpy.pay import WeChatPay

        pay = WeChatPay(
            appid=os.environ["WX_MP_APPID"],
            api_key=os.environ["WX_PAY_API_KEY"],
            mch_id=os.environ["WX_PAY_MCH_ID"],
            timeout=30,
        )
        # wechatpy's base URL is a class attribute; the instance's own points it at the sandbox
        pay.API_BASE_URL = os.environ["WX_WECHAT_PAY_BASE"].rstrip("/") + "/"
        return tornado.web.Application([(r"/.*", BlockingOrderHandler)], pay=pay)
    raise SystemExit(f"unknown mode {mode!r}")


async def main() -> None:
    mode, port, *extra = sys.argv[1:]
    server = make_app(mode, extra).listen(int(port), address="127.0.0.1")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.stop()


if __name__ == "__main__":
    asyncio.run(main())
