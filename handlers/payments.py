"""Payments: the mini-program (JSAPI), WeChat's payment notification, service-hall terminals."""

from __future__ import annotations

from .base import APIHandler, BaseHandler, authenticated


class PaymentsHandler(APIHandler):
    @authenticated
    async def post(self) -> None:
        body = self.json_body()
        order = await self.app.payments.create_jsapi(self.current_user, body.get("account_no"),
                                                     body.get("amount_fen"), self.client_ip())
        self.write_json(order, status=201)

    @authenticated
    async def get(self) -> None:
        account_no = self.get_argument("account_no", None)
        self.write_json({"payments": await self.app.payments.list_for_user(self.current_user, account_no)})


class PaymentHandler(APIHandler):
    @authenticated
    async def get(self, out_trade_no: str) -> None:
        self.write_json({"payment": await self.app.payments.get_for_user(self.current_user, out_trade_no)})


class PayNotifyHandler(BaseHandler):
    """``POST /wechat/pay/notify``: WeChat's payment notification, answered in WeChat's XML."""

    async def post(self) -> None:
        ok, message = await self.app.payments.handle_notification(self.request.body)
        self.set_header("Content-Type", "text/xml; charset=UTF-8")
        self.finish(self.app.wechat.pay.notification_reply(ok, message))


class TerminalPaymentsHandler(BaseHandler):
    """``POST /api/v1/terminal/payments``: a payment code scanned at a terminal (signed by the terminal)."""

    auth = "terminal"
    json_body = APIHandler.json_body

    async def prepare(self) -> None:
        self.prepare_request_id()
        self.current_user = None
        self.terminal = await self.app.terminals.authenticate(
            self.request.method, self.request.path, self.request.headers, self.request.body)

    async def post(self) -> None:
        outcome = await self.app.payments.terminal_pay(self.terminal, self.json_body(), self.client_ip())
        self.write_json(outcome)


default_handlers = [
    (r"/api/v1/payments", PaymentsHandler),
    (r"/api/v1/payments/([A-Za-z0-9_-]{1,32})", PaymentHandler),
    (r"/api/v1/terminal/payments", TerminalPaymentsHandler),
    (r"/wechat/pay/notify", PayNotifyHandler),
]
