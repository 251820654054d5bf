"""WeChat Pay v2 refunds: ``/secapi/pay/refund``, ``/pay/refundquery`` and refund notifications.

``/secapi/pay/refund`` answering SUCCESS means *accepted*, as at WeChat: the refund is
``PROCESSING`` and ends ``WX_SANDBOX_REFUND_DELAY`` seconds later, ``SUCCESS`` unless a test
asked for ``REFUNDCLOSE`` or ``CHANGE`` (faults ``refund_close`` / ``refund_change`` on the
endpoint ``refund``). When the request named a ``notify_url``, the outcome is then notified
there: ``req_info`` is base64 of the refund's XML encrypted AES-256-ECB (PKCS#7) with the
lowercase hex MD5 of the API key as key, sent again on the payment notifications' schedule
until answered ``return_code=SUCCESS``.

Refusals as WeChat's: TRADE_OVERDUE (paid more than a year ago, see ``/sandbox/pay/age``),
REFUND_FEE_MISMATCH (an ``out_refund_no`` again with other amounts), and by fault NOTENOUGH
(the merchant's balance: try later), USER_ACCOUNT_ABNORMAL, FREQUENCY_LIMITED, SYSTEMERROR.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import secrets
import time
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from .endpoints import PayFail, PayHandler
from .model import (
    MAX_REFUNDS,
    NOTIFY_SCHEDULE,
    SHANGHAI,
    Order,
    PayState,
    Refund,
    parse_xml,
    post_notification,
    to_xml,
)

TRADE_OVERDUE_AFTER = 365 * 24 * 3600  # WeChat refunds orders of the last year only
REFUND_FAULTS = {  # fault -> the refusal it stands for
    "notenough": ("NOTENOUGH", "基本账户余额不足，请充值后重新发起"),
    "user_account_abnormal": ("USER_ACCOUNT_ABNORMAL", "退款请求失败，用户账户异常或已注销"),
    "frequency_limited": ("FREQUENCY_LIMITED", "请求频率过高，请降低频率后重试"),
    "biz_retry": ("BIZERR_NEED_RETRY", "并发情况下，业务被拒绝，商户重试即可解决"),
}
OUTCOMES = {"refund_close": "REFUNDCLOSE", "refund_change": "CHANGE"}


def success_time(ts: float) -> str:
    return datetime.fromtimestamp(ts, SHANGHAI).strftime("%Y-%m-%d %H:%M:%S")


def encrypt_req_info(api_key: str, fields: dict[str, Any]) -> str:
    """WeChat's ``req_info``: base64(AES-256-ECB(<root>...</root>, MD5 hex of the API key))."""
    key = hashlib.md5(api_key.encode()).hexdigest().lower().encode()  # noqa: S324  (WeChat's scheme)
    xml = to_xml(fields).replace("<xml>", "<root>", 1).rsplit("</xml>", 1)[0] + "</root>"
    padder = padding.PKCS7(128).padder()
    data = padder.update(xml.encode()) + padder.finalize()
    encryptor = Cipher(algorithms.AES(key), modes.ECB()).encryptor()  # noqa: S305  (WeChat's scheme)
    return base64.b64encode(encryptor.update(data) + encryptor.finalize()).decode()


def refund_fields(order: Order, refund: Refund) -> dict[str, Any]:
    """What the notification's ``req_info`` says of a finished refund."""
    fields: dict[str, Any] = {
        "transaction_id": order.transaction_id,
        "out_trade_no": order.out_trade_no,
        "refund_id": refund.refund_id,
        "out_refund_no": refund.out_refund_no,
        "total_fee": order.total_fee,
        "settlement_total_fee": order.total_fee,
        "refund_fee": refund.refund_fee,
        "settlement_refund_fee": refund.refund_fee,
        "refund_status": refund.status,
        "refund_recv_accout": "支付用户的零钱",
        "refund_account": "REFUND_SOURCE_UNSETTLED_FUNDS",
        "refund_request_source": "API",
    }
    if refund.status == "SUCCESS" and refund.finished_at:
        fields["success_time"] = success_time(refund.finished_at)
    return fields


async def notify_refund(pay: PayState, order: Order, refund: Refund) -> None:
    """Wait for the refund to end, then tell ``refund.notify_url`` until it answers SUCCESS."""
    while True:  # its moment, or /sandbox/pay/refund-outcome, ends it
        pay.settle_refund(refund)
        if refund.status != "PROCESSING":
            break
        await asyncio.sleep(min(0.2, max(0.01, refund.settle_at - time.time())))
    notifier = REFUND_NOTIFIERS.get(refund.api, V2RefundNotifier)
    for attempt, delay in enumerate([0.0, *NOTIFY_SCHEDULE], start=1):
        await asyncio.sleep(delay * pay.notify_scale)
        body, headers = notifier.request(pay, order, refund)
        record: dict[str, Any] = {"attempt": attempt, "at": time.time(), "outcome": "pending"}
        refund.notifications.append(record)
        resp = await post_notification(refund.notify_url, body, headers, record)
        if resp is None:
            continue
        ok = notifier.accepted(resp.code, resp.body or b"")
        record["outcome"] = "SUCCESS" if ok else "FAIL"
        if ok:
            return


class V2RefundNotifier:
    """v2: ``<xml>`` with ``req_info``; ``return_code=SUCCESS`` in the answer stops the retries."""

    @staticmethod
    def request(pay: PayState, order: Order, refund: Refund) -> tuple[bytes, dict[str, str]]:
        body = to_xml(
            {
                "return_code": "SUCCESS",
                "appid": order.appid,
                "mch_id": pay.config.mch_id,
                "nonce_str": secrets.token_hex(16),
                "req_info": encrypt_req_info(pay.key, refund_fields(order, refund)),
            }
        )
        return body.encode(), {"Content-Type": "text/xml"}

    @staticmethod
    def accepted(code: int, body: bytes) -> bool:
        try:
            return code == 200 and parse_xml(body).get("return_code") == "SUCCESS"
        except ValueError:
            return False


# refund notification formats of the other APIs, by ``Refund.api`` (pay_v3_refunds adds "v3")
REFUND_NOTIFIERS: dict[str, Any] = {}


class RefundHandler(PayHandler):
    endpoint = "refund"
    required = ("out_refund_no", "total_fee", "refund_fee")

    def handle(self, req, fault):
        self.transient(fault)
        if fault in REFUND_FAULTS:
            raise PayFail(*REFUND_FAULTS[fault])
        order = self.order_of(req)
        total_fee, refund_fee = self.fee(req, "total_fee"), self.fee(req, "refund_fee")
        if not order.was_paid or order.state not in ("SUCCESS",):
            if order.state == "REVOKED" and order.was_paid:
                raise PayFail("INVALID_REQUEST", "订单已撤销，款项已退回")
            raise PayFail("ORDERNOTEXIST", "订单不存在或未支付")
        existing = next((r for r in order.refunds if r.out_refund_no == req["out_refund_no"]), None)
        if existing is not None:
            if existing.refund_fee != refund_fee or total_fee != order.total_fee:
                raise PayFail("REFUND_FEE_MISMATCH", "订单金额或退款金额与之前请求不一致，请核实后再试")
            refund = existing
        else:
            if total_fee != order.total_fee:
                raise PayFail("INVALID_REQUEST", "订单金额与原订单不一致")
            if time.time() - (order.paid_at or 0) > TRADE_OVERDUE_AFTER:
                raise PayFail("TRADE_OVERDUE", "订单已经超过退款期限")
            if any(r.out_refund_no == req["out_refund_no"] for o in self.pay.orders.values() for r in o.refunds):
                raise PayFail("INVALID_REQUEST", "商户退款单号已用于其他订单")
            if len(order.refunds) >= MAX_REFUNDS:
                raise PayFail("INVALID_REQUEST", "退款次数超过限制(50次)，请使用新订单")
            if order.refunded + refund_fee > order.total_fee:
                raise PayFail("INVALID_REQUEST", "退款金额超过订单可退金额")
            now = time.time()
            refund = Refund(
                out_refund_no=req["out_refund_no"],
                refund_id="5030" + "".join(secrets.choice("0123456789") for _ in range(24)),
                refund_fee=refund_fee,
                reason=req.get("refund_desc", ""),
                created_at=now,
                settle_at=now + self.pay.refund_delay,
                outcome=OUTCOMES.get(fault or "", "SUCCESS"),
                notify_url=req.get("notify_url", ""),
                api=req.get("notify_api") or "v2",
            )
            order.refunds.append(refund)
            if refund.notify_url:
                self.pay.spawn(notify_refund(self.pay, order, refund))
        return {
            "transaction_id": order.transaction_id,
            "out_trade_no": order.out_trade_no,
            "out_refund_no": refund.out_refund_no,
            "refund_id": refund.refund_id,
            "refund_fee": refund.refund_fee,
            "total_fee": order.total_fee,
            "fee_type": "CNY",
            "cash_fee": order.total_fee,
            "cash_refund_fee": refund.refund_fee,
            "refund_channel": "ORIGINAL",
        }


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
        if order is not None:
            pay.settle(order)
        if order is None or not refunds:
            raise PayFail("REFUNDNOTEXIST", "退款订单查询失败")
        result: dict[str, Any] = {
            "transaction_id": order.transaction_id,
            "out_trade_no": order.out_trade_no,
            "total_fee": order.total_fee,
            "cash_fee": order.total_fee,
            "fee_type": "CNY",
            "refund_fee": sum(r.refund_fee for r in refunds),
            "refund_count": len(refunds),
        }
        for n, r in enumerate(refunds):
            result.update(
                {
                    f"out_refund_no_{n}": r.out_refund_no,
                    f"refund_id_{n}": r.refund_id,
                    f"refund_channel_{n}": "ORIGINAL",
                    f"refund_fee_{n}": r.refund_fee,
                    f"refund_status_{n}": r.status,
                    f"refund_account_{n}": "REFUND_SOURCE_UNSETTLED_FUNDS",
                    f"refund_recv_accout_{n}": "支付用户的零钱",
                }
            )
            if r.status == "SUCCESS" and r.finished_at:
                result[f"refund_success_time_{n}"] = success_time(r.finished_at)
        return result
