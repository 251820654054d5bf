"""Reconciliation: WeChat's bill of one day against ``payments``."""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime, timedelta
from typing import Any

from ...wechat.pay import (
    PayBillNotFound,
)
from .common import (
    SHANGHAI,
    yuan_to_fen,
)

log = logging.getLogger(__package__)



class Reconcile:
    # -- reconciliation -------------------------------------------------------------------------
    async def reconcile(self, day: date) -> dict[str, Any]:
        """Compare WeChat's bill of one Beijing day with ``payments``: every difference, listed."""
        try:
            text = await self.pay.downloadbill(day)
        except PayBillNotFound:
            text = ""
        wechat_pay, wechat_refunds = parse_bill(text)
        start = datetime(day.year, day.month, day.day, tzinfo=SHANGHAI).astimezone(UTC)
        end = start + timedelta(days=1)
        ours = {o["out_trade_no"]: o async for o in self.db.payments.find({"paid_at": {"$gte": start, "$lt": end}})}
        differences: list[dict[str, Any]] = []
        for otn, row in wechat_pay.items():
            order = ours.get(otn) or await self.db.payments.find_one({"out_trade_no": otn})
            if order is None or order.get("paid_at") is None:
                differences.append({"kind": "missing_ours", "out_trade_no": otn, "wechat": row,
                                    "ours": order and order["status"]})
                continue
            if order["amount_fen"] != row["amount_fen"]:
                differences.append({"kind": "amount_mismatch", "out_trade_no": otn,
                                    "wechat": row["amount_fen"], "ours": order["amount_fen"]})
            expected = "reversed" if row["status"] == "REVOKED" else "credited"
            if order["status"] != expected:
                differences.append({"kind": "status_mismatch", "out_trade_no": otn,
                                    "wechat": row["status"], "ours": order["status"]})
        for otn, order in ours.items():
            if otn not in wechat_pay:
                differences.append({"kind": "missing_wechat", "out_trade_no": otn, "ours": order["status"],
                                    "amount_fen": order["amount_fen"]})
        our_refunds = {r["_id"]: r async for r in self.db.payment_refunds.find(
            {"accepted_at": {"$gte": start, "$lt": end}})}
        for refund_no, row in wechat_refunds.items():
            refund = our_refunds.get(refund_no) or await self.db.payment_refunds.find_one({"_id": refund_no})
            if refund is None:
                differences.append({"kind": "refund_missing_ours", "refund_no": refund_no, "wechat": row})
            elif refund["amount_fen"] != row["amount_fen"]:
                differences.append({"kind": "refund_amount_mismatch", "refund_no": refund_no,
                                    "wechat": row["amount_fen"], "ours": refund["amount_fen"]})
        for refund_no, refund in our_refunds.items():
            if refund_no not in wechat_refunds:
                differences.append({"kind": "refund_missing_wechat", "refund_no": refund_no,
                                    "amount_fen": refund["amount_fen"]})
        return {"date": day.isoformat(), "wechat_payments": len(wechat_pay), "our_payments": len(ours),
                "wechat_refunds": len(wechat_refunds), "differences": differences}



def parse_bill(text: str) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """WeChat's bill text: ``(payments by out_trade_no, refunds by out_refund_no)``, amounts in fen."""
    lines = [line for line in text.replace("\r\n", "\n").split("\n") if line.strip()]
    if not lines:
        return {}, {}
    header = lines[0].split(",")
    payments: dict[str, dict[str, Any]] = {}
    refunds: dict[str, dict[str, Any]] = {}
    for line in lines[1:]:
        if line.startswith("总交易单数"):
            break
        row = dict(zip(header, (cell.lstrip("`") for cell in line.split(",")), strict=False))
        status = row.get("交易状态", "")
        if status == "REFUND":
            refunds[row["商户退款单号"]] = {"out_trade_no": row["商户订单号"],
                                          "amount_fen": yuan_to_fen(row.get("退款金额", "0"))}
        else:
            payments[row["商户订单号"]] = {"status": status, "transaction_id": row.get("微信订单号"),
                                         "amount_fen": yuan_to_fen(row.get("订单金额") or row.get("应结订单金额", "0"))}
    return payments, refunds
