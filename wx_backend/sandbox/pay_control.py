"""The customer's side of WeChat Pay, and a window on the orders for tests (``/sandbox/pay/``)."""

from __future__ import annotations

import time
from datetime import datetime

from .base import SandboxHandler
from .pay import BEHAVIOURS, PayState


class PayControlHandler(SandboxHandler):
    @property
    def pay(self) -> PayState:
        return PayState.of(self.state)

    def fail(self, status: int, message: str) -> None:
        self.write_json({"error": message}, status=status)


class ConfirmHandler(PayControlHandler):
    """The customer pays a JSAPI order in ``wx.requestPayment``; WeChat then notifies the merchant."""

    async def post(self) -> None:
        body = self.json_body()
        pay = self.pay
        prepay_id = str(body.get("prepay_id", ""))
        out_trade_no = pay.by_prepay.get(prepay_id)
        order = pay.find(out_trade_no) if out_trade_no else None
        if order is None:
            return self.fail(404, "unknown prepay_id")
        now = time.time()
        if order.prepay_id != prepay_id or order.prepay_expires_at <= now:
            return self.fail(409, "prepay_id expired")
        if order.state != "NOTPAY":
            return self.fail(409, f"order is {order.state}")
        if order.time_expire is not None and order.time_expire <= now:
            return self.fail(409, "order expired (time_expire)")
        openid = body.get("openid")
        if openid and openid != order.openid:
            return self.fail(409, "another customer's order")
        pay.mark_paid(order, now)
        self.state.calls["pay_notify"] += 1
        pay.start_notifying(order, self.state.take_fault("pay_notify", order.out_trade_no))
        self.write_json(order.view())


class AuthCodeHandler(PayControlHandler):
    """The customer shows a payment code (付款码); its behaviour decides what micropay meets."""

    async def post(self) -> None:
        body = self.json_body()
        openid, behaviour = body.get("openid"), body.get("behaviour", "pay")
        if not isinstance(openid, str) or not openid:
            return self.fail(400, "openid is required")
        if behaviour not in BEHAVIOURS:
            return self.fail(400, f"behaviour must be one of {list(BEHAVIOURS)}")
        self.write_json({"auth_code": self.pay.new_auth_code(openid, behaviour), "behaviour": behaviour})


class OrdersHandler(PayControlHandler):
    """One order (``?out_trade_no=``), or all of them (optionally ``?openid=``, ``?state=``)."""

    async def get(self) -> None:
        pay = self.pay
        out_trade_no = self.get_argument("out_trade_no", "")
        if out_trade_no:
            order = pay.find(out_trade_no)
            if order is None:
                return self.fail(404, "no such order")
            return self.write_json(order.view())
        openid, state = self.get_argument("openid", ""), self.get_argument("state", "")
        orders = [
            o.view() for o in pay.all_orders() if (not openid or o.openid == openid) and (not state or o.state == state)
        ]
        self.write_json({"orders": orders})


class SummaryHandler(PayControlHandler):
    """What customers have paid: count and fen of orders in state SUCCESS (refunds separately)."""

    async def get(self) -> None:
        orders = self.pay.all_orders()
        paid = [o for o in orders if o.state == "SUCCESS"]
        by_state: dict[str, int] = {}
        for o in orders:
            by_state[o.trade_state] = by_state.get(o.trade_state, 0) + 1
        self.write_json(
            {
                "count": len(paid),
                "total_fee": sum(o.total_fee for o in paid),
                "refund_fee": sum(o.refunded for o in paid),
                "by_state": by_state,
            }
        )


class AgeHandler(PayControlHandler):
    """``{"out_trade_no", "days"}``: the order was made and paid that many days earlier (its refunds
    too), so a test meets what only old orders meet (TRADE_OVERDUE after a year)."""

    async def post(self) -> None:
        body = self.json_body()
        order = self.pay.find(str(body.get("out_trade_no", "")))
        days = body.get("days")
        if order is None:
            return self.fail(404, "no such order")
        if isinstance(days, bool) or not isinstance(days, int) or not 0 < days <= 3650:
            return self.fail(400, "days must be an integer from 1 to 3650")
        shift = days * 86400
        order.created_at -= shift
        order.paid_at = order.paid_at - shift if order.paid_at is not None else None
        for refund in order.refunds:
            refund.created_at -= shift
            refund.settle_at -= shift
        self.write_json(order.view())


class RefundOutcomeHandler(PayControlHandler):
    """WeChat finishes a refund now: ``{"out_refund_no", "status"}`` with SUCCESS, REFUNDCLOSE or
    CHANGE ends a PROCESSING refund (its notification follows, when it has a ``notify_url``)."""

    async def post(self) -> None:
        body = self.json_body()
        status = body.get("status")
        if status not in ("SUCCESS", "REFUNDCLOSE", "CHANGE"):
            return self.fail(400, "status must be SUCCESS, REFUNDCLOSE or CHANGE")
        pay = self.pay
        found = next(
            ((o, r) for o in pay.orders.values() for r in o.refunds if r.out_refund_no == body.get("out_refund_no")),
            None,
        )
        if found is None:
            return self.fail(404, "no such refund")
        order, refund = found
        pay.settle_refund(refund)
        if refund.status != "PROCESSING":
            return self.fail(409, f"refund is {refund.status}")
        refund.outcome, refund.settle_at = status, time.time()
        pay.settle_refund(refund)
        self.write_json(order.view())


class ClockHandler(PayControlHandler):
    """The bill clock: ``{"now": "2026-12-01T10:05:00+08:00"}`` makes bills be served as at that
    moment (the offset from real time is kept); ``DELETE`` puts it back to real time."""

    async def get(self) -> None:
        self.write_json({"offset_seconds": self.pay.clock_offset})

    async def post(self) -> None:
        try:
            now = datetime.fromisoformat(str(self.json_body().get("now", "")))
        except ValueError:
            return self.fail(400, "now must be an ISO 8601 time with its offset")
        if now.tzinfo is None:
            return self.fail(400, "now must carry its UTC offset")
        self.pay.clock_offset = now.timestamp() - time.time()
        self.write_json({"offset_seconds": self.pay.clock_offset})

    async def delete(self) -> None:
        self.pay.clock_offset = 0.0
        self.write_json({"offset_seconds": 0.0})


routes = [
    (r"/sandbox/pay/age", AgeHandler),
    (r"/sandbox/pay/clock", ClockHandler),
    (r"/sandbox/pay/refund-outcome", RefundOutcomeHandler),
    (r"/sandbox/pay/confirm", ConfirmHandler),
    (r"/sandbox/pay/auth-code", AuthCodeHandler),
    (r"/sandbox/pay/orders", OrdersHandler),
    (r"/sandbox/pay/summary", SummaryHandler),
]
