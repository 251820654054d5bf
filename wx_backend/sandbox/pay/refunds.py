"""WeChat Pay v2 refunds: ``/secapi/pay/refund`` and ``/pay/refundquery``."""

from __future__ import annotations

import secrets
import time
from datetime import datetime
from typing import Any

from .endpoints import PayFail, PayHandler
from .model import MAX_REFUNDS, SHANGHAI, Refund


class RefundHandler(PayHandler):
    endpoint = "refund"
    required = ("out_refund_no", "total_fee", "refund_fee")

    def handle(self, req, fault):
        self.transient(fault)
        order = self.order_of(req)
        total_fee, refund_fee = self.fee(req, "total_fee"), self.fee(req, "refund_fee")
        if not order.was_paid or order.state not in ("SUCCESS",):
            if order.state == "REVOKED" and order.was_paid:
                raise PayFail("INVALID_REQUEST", "订单已撤销，款项已退回")
            raise PayFail("ORDERNOTEXIST", "订单不存在或未支付")
        if total_fee != order.total_fee:
            raise PayFail("INVALID_REQUEST", "订单金额与原订单不一致")
        existing = next((r for r in order.refunds if r.out_refund_no == req["out_refund_no"]), None)
        if existing is not None:
            if existing.refund_fee != refund_fee:
                raise PayFail("INVALID_REQUEST", "同一商户退款单号的退款金额与之前请求不一致")
            refund = existing
        else:
            if any(r.out_refund_no == req["out_refund_no"] for o in self.pay.orders.values()
                   for r in o.refunds):
                raise PayFail("INVALID_REQUEST", "商户退款单号已用于其他订单")
            if len(order.refunds) >= MAX_REFUNDS:
                raise PayFail("INVALID_REQUEST", "退款次数超过限制(50次)，请使用新订单")
            if order.refunded + refund_fee > order.total_fee:
                raise PayFail("INVALID_REQUEST", "退款金额超过订单可退金额")
            refund = Refund(out_refund_no=req["out_refund_no"],
                            refund_id="5030" + "".join(secrets.choice("0123456789") for _ in range(24)),
                            refund_fee=refund_fee, reason=req.get("refund_desc", ""), created_at=time.time())
            order.refunds.append(refund)
        return {"transaction_id": order.transaction_id, "out_trade_no": order.out_trade_no,
                "out_refund_no": refund.out_refund_no, "refund_id": refund.refund_id,
                "refund_fee": refund.refund_fee, "total_fee": order.total_fee, "fee_type": "CNY",
                "cash_fee": order.total_fee, "cash_refund_fee": refund.refund_fee,
                "refund_channel": "ORIGINAL"}


class RefundQueryHandler(PayHandler):
    endpoint = "refundquery"

    def handle(self, req, fault):
        self.transient(fault)
        pay = self.pay
        keys = ("out_refund_no", "refund_id", "out_trade_no", "transaction_id")
        if not any(req.get(k) for k in keys):
            raise PayFail("LACK_PARAMS", "缺少参数out_refund_no、refund_id、out_trade_no或transaction_id")
        order, refunds = None, []
        if req.get("out_refund_no") or req.get("refund_id"):
            for o in pay.orders.values():
                for r in o.refunds:
                    if r.out_refund_no == req.get("out_refund_no") or r.refund_id == req.get("refund_id"):
                        order, refunds = o, [r]
        else:
            order = pay.find(req.get("out_trade_no", ""), req.get("transaction_id", ""))
            refunds = list(order.refunds) if order else []
        if order is None or not refunds:
            raise PayFail("REFUNDNOTEXIST", "退款订单查询失败")
        result: dict[str, Any] = {
            "transaction_id": order.transaction_id, "out_trade_no": order.out_trade_no,
            "total_fee": order.total_fee, "cash_fee": order.total_fee, "fee_type": "CNY",
            "refund_fee": sum(r.refund_fee for r in refunds), "refund_count": len(refunds),
        }
        for n, r in enumerate(refunds):
            result.update({
                f"out_refund_no_{n}": r.out_refund_no, f"refund_id_{n}": r.refund_id,
                f"refund_channel_{n}": "ORIGINAL", f"refund_fee_{n}": r.refund_fee,
                f"refund_status_{n}": r.status, f"refund_account_{n}": "REFUND_SOURCE_UNSETTLED_FUNDS",
                f"refund_recv_accout_{n}": "支付用户的零钱",
                f"refund_success_time_{n}": datetime.fromtimestamp(r.created_at, SHANGHAI)
                .strftime("%Y-%m-%d %H:%M:%S"),
            })
        return result

