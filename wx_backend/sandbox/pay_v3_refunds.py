"""WeChat Pay v3 refund notifications: ``REFUND.SUCCESS``, ``REFUND.CLOSED`` or ``REFUND.ABNORMAL``,
the refund AES-256-GCM encrypted with the APIv3 key and the request signed as v3's payment
notifications are. Sent for refunds asked over v3 with a ``notify_url`` (``pay/refunds.py``
runs the schedule); a 200 or 204 answer stops the retries."""

from __future__ import annotations

from .pay import Order, PayState, Refund
from .pay.refunds import REFUND_NOTIFIERS
from .pay_v3 import V3_REFUND_STATUS, rfc3339, v3_notification

EVENTS = {
    "SUCCESS": ("REFUND.SUCCESS", "退款成功"),
    "CLOSED": ("REFUND.CLOSED", "退款关闭"),
    "ABNORMAL": ("REFUND.ABNORMAL", "退款异常"),
}


class V3RefundNotifier:
    @staticmethod
    def request(pay: PayState, order: Order, refund: Refund) -> tuple[bytes, dict[str, str]]:
        status = V3_REFUND_STATUS.get(refund.status, refund.status)
        resource = {
            "mchid": pay.config.mch_id,
            "out_trade_no": order.out_trade_no,
            "transaction_id": order.transaction_id,
            "out_refund_no": refund.out_refund_no,
            "refund_id": refund.refund_id,
            "refund_status": status,
            "user_received_account": "支付用户零钱",
            "amount": {
                "total": order.total_fee,
                "refund": refund.refund_fee,
                "payer_total": order.total_fee,
                "payer_refund": refund.refund_fee,
            },
        }
        if status == "SUCCESS" and refund.finished_at:
            resource["success_time"] = rfc3339(refund.finished_at)
        event, summary = EVENTS.get(status, ("REFUND.ABNORMAL", "退款异常"))
        return v3_notification(pay, refund.refund_id, event, summary, resource)

    @staticmethod
    def accepted(code: int, body: bytes) -> bool:
        return code in (200, 204)


REFUND_NOTIFIERS["v3"] = V3RefundNotifier

routes: list = []  # no endpoints: the notifier above is used by /v3/refund/domestic/refunds
