"""Reconciliation: WeChat's bill of one day against ``payments``.

WeChat Pay builds a day's bill from 09:00 Beijing time the next day and recommends fetching it
after 10:00; it keeps three months of bills. So a day is reconciled only once its bill can
exist (``bill_availability``): earlier, or older than three months, the reconciliation is
refused with a clear message. "Bill Creating" is asked again (``WX_PAY_BILL_RETRY`` seconds
apart, ``BILL_TRIES`` times). "No Bill Exist" is WeChat saying it had no trade that day: it
agrees with a day without payments here, and is a difference (``no_bill``) when we recorded
any, never an empty bill against which every payment would be "missing".

A bill row's every cell starts with a backtick, and a cell may itself hold commas (商品名称,
商户数据包): rows are cut at ``,``` only (``bill_cells``), the header rows read as CSV.
"""

from __future__ import annotations

import asyncio
import csv
import logging
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from ...db import utcnow
from ...errors import AppError
from ...wechat.pay import PayBillNotFound, PayBillNotReady
from .common import SHANGHAI, yuan_to_fen

log = logging.getLogger(__package__)

BILL_READY_AT = time(10, 0)  # Beijing time, the day after: WeChat builds bills from 09:00
BILL_KEPT_DAYS = 90  # WeChat keeps three months of bills
NO_BILL_BUT_OURS = "微信支付称当日无交易（No Bill Exist），本系统却有记录：请核对商户号，稍后重试"
BILL_TRIES = 5  # "Bill Creating": asked this many times, WX_PAY_BILL_RETRY seconds apart


def bill_ready_at(day: date) -> datetime:
    """When WeChat's bill of ``day`` can be fetched (aware, Beijing time)."""
    return datetime.combine(day + timedelta(days=1), BILL_READY_AT, tzinfo=SHANGHAI)


def bill_availability(day: date, now: datetime) -> AppError | None:
    """Why the bill of ``day`` cannot be fetched at ``now``, or ``None``."""
    ready = bill_ready_at(day)
    if now < ready:
        return AppError(
            f"{day.isoformat()} 的微信支付对账单在次日 09:00 起生成，请在 "
            f"{ready.strftime('%Y-%m-%d %H:%M')}（北京时间）之后对账",
            code="bill_not_available",
            status=409,
            details={"date": day.isoformat(), "available_from": ready.isoformat()},
        )
    if now.astimezone(SHANGHAI).date() - day > timedelta(days=BILL_KEPT_DAYS):
        return AppError(
            f"微信支付只保留三个月内的对账单，{day.isoformat()} 已无法下载",
            code="bill_expired",
            status=409,
            details={"date": day.isoformat()},
        )
    return None


class Reconcile:
    async def reconcile(self, day: date) -> dict[str, Any]:
        """Compare WeChat's bill of one Beijing day with ``payments``: every difference, listed."""
        refused = bill_availability(day, utcnow())
        if refused is not None:
            raise refused
        text = await self._download_bill(day)
        start = datetime(day.year, day.month, day.day, tzinfo=SHANGHAI).astimezone(UTC)
        end = start + timedelta(days=1)
        ours = {o["out_trade_no"]: o async for o in self.db.payments.find({"paid_at": {"$gte": start, "$lt": end}})}
        our_refunds = {
            r["_id"]: r async for r in self.db.payment_refunds.find({"accepted_at": {"$gte": start, "$lt": end}})
        }
        if text is None:  # "No Bill Exist": WeChat had no trade that day
            differences = (
                [
                    {
                        "kind": "no_bill",
                        "our_payments": len(ours),
                        "our_refunds": len(our_refunds),
                        "message": NO_BILL_BUT_OURS,
                    }
                ]
                if ours or our_refunds
                else []
            )
            return {
                "date": day.isoformat(),
                "bill": "none",
                "wechat_payments": 0,
                "our_payments": len(ours),
                "wechat_refunds": 0,
                "differences": differences,
            }
        wechat_pay, wechat_refunds, unreadable = parse_bill(text)
        differences: list[dict[str, Any]] = [{"kind": "unreadable_row", "row": row} for row in unreadable]
        for otn, row in wechat_pay.items():
            order = ours.get(otn) or await self.db.payments.find_one({"out_trade_no": otn})
            if order is None or order.get("paid_at") is None:
                differences.append(
                    {"kind": "missing_ours", "out_trade_no": otn, "wechat": row, "ours": order and order["status"]}
                )
                continue
            if order["amount_fen"] != row["amount_fen"]:
                differences.append(
                    {
                        "kind": "amount_mismatch",
                        "out_trade_no": otn,
                        "wechat": row["amount_fen"],
                        "ours": order["amount_fen"],
                    }
                )
            expected = "reversed" if row["status"] == "REVOKED" else "credited"
            if order["status"] != expected:
                differences.append(
                    {"kind": "status_mismatch", "out_trade_no": otn, "wechat": row["status"], "ours": order["status"]}
                )
        for otn, order in ours.items():
            if otn not in wechat_pay:
                differences.append(
                    {
                        "kind": "missing_wechat",
                        "out_trade_no": otn,
                        "ours": order["status"],
                        "amount_fen": order["amount_fen"],
                    }
                )
        for refund_no, row in wechat_refunds.items():
            refund = our_refunds.get(refund_no) or await self.db.payment_refunds.find_one({"_id": refund_no})
            if refund is None:
                differences.append({"kind": "refund_missing_ours", "refund_no": refund_no, "wechat": row})
            elif refund["amount_fen"] != row["amount_fen"]:
                differences.append(
                    {
                        "kind": "refund_amount_mismatch",
                        "refund_no": refund_no,
                        "wechat": row["amount_fen"],
                        "ours": refund["amount_fen"],
                    }
                )
        for refund_no, refund in our_refunds.items():
            if refund_no not in wechat_refunds:
                differences.append(
                    {"kind": "refund_missing_wechat", "refund_no": refund_no, "amount_fen": refund["amount_fen"]}
                )
        return {
            "date": day.isoformat(),
            "bill": "downloaded",
            "wechat_payments": len(wechat_pay),
            "our_payments": len(ours),
            "wechat_refunds": len(wechat_refunds),
            "differences": differences,
        }

    async def _download_bill(self, day: date) -> str | None:
        """The bill's text; ``None`` for "No Bill Exist"; "Bill Creating" is asked again."""
        for attempt in range(BILL_TRIES):
            try:
                return await self.pay.downloadbill(day)
            except PayBillNotFound:
                return None
            except PayBillNotReady:
                if attempt == BILL_TRIES - 1:
                    break
                log.info("bill of %s still being created; asking again in %.0f s", day, self.config.pay_bill_retry)
                await asyncio.sleep(self.config.pay_bill_retry)
        raise AppError(
            f"微信支付仍在生成 {day.isoformat()} 的对账单（Bill Creating），请稍后再对账",
            code="bill_creating",
            status=503,
            details={"date": day.isoformat(), "tries": BILL_TRIES},
        )


def bill_cells(line: str) -> list[str]:
    """A bill row's cells. Each starts with a backtick, so a cell ends only where ``,``` starts
    the next: a comma inside 商品名称 or 商户数据包 stays in its cell."""
    return line[1:].split(",`") if line.startswith("`") else next(csv.reader([line]))


def parse_bill(text: str) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]], list[str]]:
    """WeChat's bill text: ``(payments by out_trade_no, refunds by out_refund_no, unreadable rows)``,
    amounts in fen. A row whose cells do not match the header is returned as unreadable."""
    lines = [line for line in text.replace("\r\n", "\n").split("\n") if line.strip()]
    if not lines:
        return {}, {}, []
    header = next(csv.reader([lines[0]]))
    payments: dict[str, dict[str, Any]] = {}
    refunds: dict[str, dict[str, Any]] = {}
    unreadable: list[str] = []
    for line in lines[1:]:
        if line.startswith("总交易单数"):
            break
        cells = bill_cells(line)
        if len(cells) != len(header):
            unreadable.append(line)
            continue
        row = dict(zip(header, cells, strict=True))
        status = row.get("交易状态", "")
        if status == "REFUND":
            refunds[row["商户退款单号"]] = {
                "out_trade_no": row["商户订单号"],
                "amount_fen": yuan_to_fen(row.get("退款金额", "0")),
            }
        else:
            payments[row["商户订单号"]] = {
                "status": status,
                "transaction_id": row.get("微信订单号"),
                "amount_fen": yuan_to_fen(row.get("订单金额") or row.get("应结订单金额", "0")),
            }
    return payments, refunds, unreadable
