"""Compare one day's WeChat Pay bill with the payments on record, and list every difference.

    python -m scripts.reconcile --date YYYY-MM-DD [--json]

The day is an Asia/Shanghai calendar day (WeChat's bill day). Differences: ``missing_ours``
(WeChat has a payment we have not recorded as paid), ``missing_wechat`` (we hold a payment
paid that day that WeChat's bill lacks), ``amount_mismatch``, ``status_mismatch`` (e.g.
WeChat REVOKED, ours credited), the same for refunds, ``no_bill`` (WeChat says it had no
trade that day, "No Bill Exist", while we recorded some) and ``unreadable_row``.

WeChat builds a day's bill from 09:00 the next day: a day is accepted from 10:00 (Beijing) the
next day and for three months. Earlier or older days are refused (``bill_not_available``,
``bill_expired``); "Bill Creating" is asked again 5 times, ``WX_PAY_BILL_RETRY`` seconds apart,
then refused (``bill_creating``). Exit status 0 when the books agree, 1 when there are
differences, 2 when refused or on errors (run it again later).
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import date

from scripts.admin import run_admin, services


async def run(day: date, as_json: bool) -> int:
    async with services() as ctx:
        report = await ctx.payments.reconcile(day)
    if as_json:
        print(json.dumps(report, ensure_ascii=False, default=str, indent=2))
    else:
        bill = (
            "no bill (No Bill Exist)"
            if report["bill"] == "none"
            else f"WeChat {report['wechat_payments']} payments, {report['wechat_refunds']} refunds"
        )
        print(f"{report['date']}: {bill}; ours {report['our_payments']} payments")
        for diff in report["differences"]:
            print(" ".join(f"{k}={v}" for k, v in diff.items()))
        print(f"{len(report['differences'])} differences")
    return 1 if report["differences"] else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--date", required=True, type=date.fromisoformat, help="YYYY-MM-DD (Beijing time)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    return run_admin(lambda: run(args.date, args.json), refused_status=2)


if __name__ == "__main__":
    sys.exit(main())
