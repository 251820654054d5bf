"""Payments: the mini-program (JSAPI), WeChat's payment notification, service-hall terminals."""

from __future__ import annotations

from wx_backend.errors import AppError
from wx_backend.wechat.pay import NOTIFY_MAX_BODY, PayAPI

from . import spec
from .base import APIHandler, BaseHandler, authenticated


class PaymentsHandler(APIHandler):
    @authenticated
    async def post(self) -> None:
        body = self.json_body()
        order = await self.app.payments.create_jsapi(
            self.current_user, body.get("account_no"), body.get("amount_fen"), self.client_ip()
        )
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

    max_body_bytes = NOTIFY_MAX_BODY  # a notification is about 1 KB; a larger body is refused unparsed

    async def post(self) -> None:
        ok, message = await self.app.payments.handle_notification(self.request.body)
        self.set_header("Content-Type", "text/xml; charset=UTF-8")
        self.finish(PayAPI.notification_reply(ok, message))


class RefundNotifyHandler(BaseHandler):
    """``POST /wechat/pay/refund-notify``: WeChat Pay v2's refund notification (``req_info``
    encrypted with the API key's MD5), answered in WeChat's XML."""

    max_body_bytes = NOTIFY_MAX_BODY

    async def post(self) -> None:
        ok, message = await self.app.payments.handle_refund_notification(self.request.body)
        self.set_header("Content-Type", "text/xml; charset=UTF-8")
        self.finish(PayAPI.notification_reply(ok, message))


class RefundNotifyV3Handler(BaseHandler):
    """``POST /wechat/pay/refund-notify/v3``: WeChat Pay v3's refund notification; answered like
    the v3 payment notification (204, or 400 so that WeChat sends it again)."""

    max_body_bytes = NOTIFY_MAX_BODY

    async def post(self) -> None:
        ok, message = await self.app.payments.handle_refund_notification(self.request.body, self.request.headers)
        if not ok:
            raise AppError(message, code="wechat_pay_notification_refused", status=400)
        self.set_status(204)
        self.finish()


class PayNotifyV3Handler(BaseHandler):
    """``POST /wechat/pay/notify/v3``: WeChat Pay v3's notification (signed headers, encrypted
    resource). Accepted: 204 without a body. Refused: 400 with the error body, and WeChat,
    which retries whatever 4xx or 5xx it gets, sends it again on its schedule."""

    max_body_bytes = NOTIFY_MAX_BODY

    async def post(self) -> None:
        ok, message = await self.app.payments.handle_notification(self.request.body, self.request.headers)
        if not ok:
            raise AppError(message, code="wechat_pay_notification_refused", status=400)
        self.set_status(204)
        self.finish()


class TerminalPaymentsHandler(BaseHandler):
    """``POST /api/v1/terminal/payments``: a payment code scanned at a terminal (signed by the terminal)."""

    auth = "terminal"
    json_body = APIHandler.json_body

    async def prepare(self) -> None:
        self.prepare_request_id()
        self.current_user = None
        self.terminal = await self.app.terminals.authenticate(
            self.request.method, self.request.path, self.request.headers, self.request.body
        )

    async def post(self) -> None:
        outcome = await self.app.payments.terminal_pay(self.terminal, self.json_body(), self.client_ip())
        self.write_json(outcome)


default_handlers = [
    (r"/api/v1/payments", PaymentsHandler),
    (r"/api/v1/payments/([A-Za-z0-9_-]{1,32})", PaymentHandler),
    (r"/api/v1/terminal/payments", TerminalPaymentsHandler),
    (r"/wechat/pay/notify", PayNotifyHandler),
    (r"/wechat/pay/notify/v3", PayNotifyV3Handler),
    (r"/wechat/pay/refund-notify", RefundNotifyHandler),
    (r"/wechat/pay/refund-notify/v3", RefundNotifyV3Handler),
]

_PAYMENT = spec.obj({"payment": spec.ref("Payment")})

openapi = {
    "/api/v1/payments": {
        "post": spec.operation(
            "Pay an account by WeChat Pay (JSAPI): the parameters for wx.requestPayment",
            tag="payments",
            body=spec.obj({"account_no": spec.ACCOUNT_NO, "amount_fen": {"type": "integer", "minimum": 1}}),
            ok={
                201: spec.obj(
                    {
                        "out_trade_no": spec.STRING,
                        "amount_fen": spec.FEN,
                        "expires_at": spec.STRING,
                        "pay_params": {"type": "object"},
                    }
                )
            },
            errors={
                404: ["account_not_found"],
                409: ["payment_busy"],
                422: ["validation_failed"],
                502: ["payment_order_failed"],
                503: ["wechat_unavailable"],
            },
        ),
        "get": spec.operation(
            "The user's payments, newest first (at most 100)",
            tag="payments",
            query={"account_no": spec.ACCOUNT_NO},
            ok={200: spec.obj({"payments": spec.array(spec.ref("Payment"))})},
            errors={422: ["validation_failed"]},
        ),
    },
    "/api/v1/payments/{out_trade_no}": {
        "get": spec.operation(
            "One of the user's payments (a pending one is first asked of WeChat)",
            tag="payments",
            path={"out_trade_no": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,32}$"}},
            ok={200: _PAYMENT},
            errors={404: ["payment_not_found"]},
        ),
    },
    "/api/v1/terminal/payments": {
        "post": spec.operation(
            "Charge a payment code scanned at a service-hall terminal; answers the final outcome",
            tag="payments",
            description="Idempotent by `terminal_trade_no`: the same number asks for the same payment's outcome.",
            body=spec.obj(
                {
                    "account_no": spec.ACCOUNT_NO,
                    "amount_fen": {"type": "integer", "minimum": 1},
                    "auth_code": {"type": "string", "pattern": "^[0-9]{18}$"},
                    "terminal_trade_no": spec.STRING,
                }
            ),
            ok={
                200: spec.obj(
                    {
                        "out_trade_no": spec.STRING,
                        "status": {"type": "string", "enum": ["paid", "reversed", "failed", "pending"]},
                    },
                    {
                        "reason": spec.STRING,
                        "transaction_id": spec.nullable(spec.STRING),
                        "account_no": spec.STRING,
                        "amount_fen": spec.FEN,
                    },
                )
            },
            errors={
                403: ["terminal_disabled"],
                404: ["account_not_found"],
                409: ["terminal_trade_conflict"],
                422: ["validation_failed"],
                503: ["wechat_unavailable"],
            },
        ),
    },
    "/wechat/pay/notify": {
        "post": spec.operation(
            "WeChat Pay's payment notification (XML, signed with the API key)",
            tag="wechat",
            description="Always answered 200 in WeChat's XML: `<xml><return_code>SUCCESS</return_code>...` once "
            "the order is recorded, `FAIL` with a message when the signature, appid, mch_id, "
            "order or amount do not check out (nothing changes then).",
            body_content={"text/xml": {"schema": {"type": "string"}}},
            body_required=False,
            ok={200: {"description": "WeChat's XML answer", "content": {"text/xml": {"schema": {"type": "string"}}}}},
        ),
    },
    "/wechat/pay/refund-notify": {
        "post": spec.operation(
            "WeChat Pay's refund notification (XML; req_info AES-256-ECB with the MD5 of the API key)",
            tag="wechat",
            description="`req_info` must decrypt with our key (that is its authentication) and name a refund of "
            "ours with its amount; then SUCCESS books the refund (balance, bills), REFUNDCLOSE gives "
            "the amount back, CHANGE is left to the operator. Always answered 200 in WeChat's XML: "
            "SUCCESS once recorded (a repeat too), FAIL otherwise (nothing changes, WeChat retries).",
            body_content={"text/xml": {"schema": {"type": "string"}}},
            body_required=False,
            ok={200: {"description": "WeChat's XML answer", "content": {"text/xml": {"schema": {"type": "string"}}}}},
        ),
    },
    "/wechat/pay/refund-notify/v3": {
        "post": spec.operation(
            "WeChat Pay API v3's refund notification (REFUND.SUCCESS / CLOSED / ABNORMAL)",
            tag="wechat",
            description="Signature and AES-256-GCM resource checked as for the v3 payment notification; then the "
            "refund is applied as from the v2 notification. 204 once recorded (a repeat too); 400 "
            "otherwise, when nothing changes and WeChat sends it again.",
            body_content={"application/json": {"schema": {"type": "object"}}},
            body_required=False,
            ok={204: None},
            errors={400: ["wechat_pay_notification_refused"]},
        ),
    },
    "/wechat/pay/notify/v3": {
        "post": spec.operation(
            "WeChat Pay API v3's payment notification (JSON, signed headers, AES-256-GCM resource)",
            tag="wechat",
            description="The `Wechatpay-Signature` over `timestamp\\nnonce\\nbody\\n` is checked with the WeChat "
            "Pay public key (`Wechatpay-Serial` must be its id, the timestamp within 5 minutes), "
            "`resource` is decrypted with the APIv3 key, then appid, mchid, order and amount are "
            "checked. Answered 204 once the order is recorded (a repeat too); 400 otherwise, when "
            "nothing changes and WeChat sends it again.",
            body_content={"application/json": {"schema": {"type": "object"}}},
            body_required=False,
            ok={204: None},
            errors={400: ["wechat_pay_notification_refused"]},
        ),
    },
}
