"""WeChat Pay v2 bills: ``/pay/downloadbill`` and the bill text of one day.

Served on WeChat's schedule, by the sandbox's bill clock (real time plus ``PayState.clock_offset``,
set with ``/sandbox/pay/clock``): a day's bill is built from 09:00 Beijing time the next day and
ready at 10:00 ("Bill Creating" until then), kept three months; today, a future day or an older
one is ``invalid bill_date``; a day without trades is "No Bill Exist".
"""

from __future__ import annotations

import gzip
import time
from datetime import date, datetime, timedelta

from .endpoints import PayHandler
from .model import BILL_COLUMNS, BILL_TOTAL_COLUMNS, FEE_RATE_PER_MILLE, SHANGHAI, Order, PayState, yuan


class DownloadBillHandler(PayHandler):
    endpoint = "downloadbill"
    required = ("bill_date",)

    def post_fail(self, msg: str) -> None:
        self.write_xml({"return_code": "FAIL", "return_msg": msg, "error_code": "20001"})

    def handle(self, req, fault):
        if fault == "system_error":
            self.write_xml({"return_code": "FAIL", "return_msg": "SYSTEMERROR"})
            return None
        bill_type = req.get("bill_type") or "ALL"
        if bill_type not in ("ALL", "SUCCESS", "REFUND"):
            self.post_fail("invalid bill_type")
            return None
        try:
            day = datetime.strptime(req["bill_date"], "%Y%m%d").date()
        except ValueError:
            self.post_fail("invalid bill_date")
            return None
        refusal = bill_refusal(day, time.time() + self.pay.clock_offset)
        if refusal:
            self.post_fail(refusal)
            return None
        text = bill(self.pay, day, bill_type)
        if text is None:
            self.post_fail("No Bill Exist")
            return None
        data = text.encode("utf-8")
        if req.get("tar_type") == "GZIP":
            self.set_header("Content-Type", "application/x-gzip")
            self.finish(gzip.compress(data))
        else:
            self.set_header("Content-Type", "text/plain; charset=UTF-8")
            self.finish(data)
        return None


BILL_READY_HOUR = 10  # Beijing time, the next day (built from 09:00)
BILL_KEPT_DAYS = 90


def bill_refusal(day: date, now: float) -> str | None:
    """WeChat's ``return_msg`` when the bill of ``day`` cannot be had at ``now``, else ``None``."""
    today = datetime.fromtimestamp(now, SHANGHAI).date()
    if day >= today or (today - day).days > BILL_KEPT_DAYS:
        return "invalid bill_date"
    ready = datetime(day.year, day.month, day.day, BILL_READY_HOUR, tzinfo=SHANGHAI) + timedelta(days=1)
    return "Bill Creating" if now < ready.timestamp() else None


def bill(pay: PayState, day, bill_type: str = "ALL") -> str | None:
    """The merchant's bill of one Beijing-time day, in WeChat's format; ``None`` when empty.

    A payment row for every order paid that day (交易状态 SUCCESS, or REVOKED when it was
    reversed later, with the whole amount in 退款金额), and a refund row (交易状态 REFUND) for
    every refund made that day. Amounts are yuan with two decimals, from integer fen.
    """
    start = datetime(day.year, day.month, day.day, tzinfo=SHANGHAI).timestamp()
    end = (datetime(day.year, day.month, day.day, tzinfo=SHANGHAI) + timedelta(days=1)).timestamp()
    rows: list[tuple[float, list[str]]] = []
    totals = {"settled": 0, "refund": 0, "fee": 0, "order": 0, "applied": 0}
    cfg = pay.config

    def row(
        at: float,
        order: Order,
        status: str,
        settled: int,
        refund_no: str,
        refund_id: str,
        refund: int,
        fee: int,
        refund_status: str = "",
    ) -> list[str]:
        return [
            datetime.fromtimestamp(at, SHANGHAI).strftime("%Y-%m-%d %H:%M:%S"),
            order.appid,
            cfg.mch_id,
            "0",
            "",
            order.transaction_id,
            order.out_trade_no,
            order.openid,
            order.trade_type,
            status,
            "OTHERS",
            "CNY",
            yuan(settled),
            "0.00",
            refund_id,
            refund_no,
            yuan(refund),
            "0.00",
            "ORIGINAL" if refund else "",
            refund_status or ("SUCCESS" if refund else ""),
            order.body,
            order.attach,
            yuan(fee),
            "0.60%",
            yuan(settled),
            yuan(refund),
            "",
        ]

    for order in pay.all_orders():
        if bill_type in ("ALL", "SUCCESS") and order.was_paid and start <= order.paid_at < end:
            fee = (order.total_fee * FEE_RATE_PER_MILLE + 500) // 1000
            revoked = order.state == "REVOKED"
            refund = order.total_fee if revoked else 0
            rows.append(
                (
                    order.paid_at,
                    row(
                        order.paid_at, order, "REVOKED" if revoked else "SUCCESS", order.total_fee, "", "", refund, fee
                    ),
                )
            )
            totals["settled"] += order.total_fee
            totals["order"] += order.total_fee
            totals["refund"] += refund
            totals["applied"] += refund
            totals["fee"] += fee
        if bill_type in ("ALL", "REFUND"):
            for r in order.refunds:
                if start <= r.created_at < end:
                    rows.append(
                        (
                            r.created_at,
                            row(
                                r.created_at,
                                order,
                                "REFUND",
                                0,
                                r.out_refund_no,
                                r.refund_id,
                                r.refund_fee,
                                0,
                                r.status,
                            ),
                        )
                    )
                    totals["refund"] += r.refund_fee
                    totals["applied"] += r.refund_fee
    if not rows:
        return None
    rows.sort(key=lambda item: item[0])
    lines = [BILL_COLUMNS]
    lines += [",".join("`" + value for value in cells) for _, cells in rows]  # commas stay, as WeChat's
    lines.append(BILL_TOTAL_COLUMNS)
    lines.append(
        ",".join(
            "`" + v
            for v in (
                str(len(rows)),
                yuan(totals["settled"]),
                yuan(totals["refund"]),
                "0.00",
                yuan(totals["fee"]),
                yuan(totals["order"]),
                yuan(totals["applied"]),
            )
        )
    )
    return "\r\n".join(lines) + "\r\n"
