"""Import monthly bills from a file: ``python -m scripts.import_bills FILE [--no-notify]``.

FILE is CSV (columns: account_no, period, amount_fen, due_date, reading_previous,
reading_current, multiplier, kwh_total, kwh_jian/feng/ping/gu, price_flat, price_jian/feng/
ping/gu, tier1_upto, tier1_kwh, tier1_price, tier2_upto, tier2_kwh, tier2_price, tier3_kwh,
tier3_price, offline_paid_fen), JSON (an array of objects shaped like the body of
``PUT /internal/v1/accounts/{no}/bills/{period}`` plus ``account_no`` and ``period``) or JSON
Lines. Each row goes through ``BillService.upsert``; bad rows are listed with their line and
reasons and the others are imported. Exit status 0 when every row was imported, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from scripts.import_common import services
from wx_backend.imports import import_bills


async def main(path: Path, notify: bool) -> int:
    async with services() as app:
        report = await import_bills(app.bills, path, notify=notify)
    print(report.summary())
    return 1 if report.rejected else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Import monthly bills (CSV, JSON or JSON Lines).")
    parser.add_argument("file", type=Path)
    parser.add_argument(
        "--no-notify", action="store_true", help="do not tell subscribers about new bills (e.g. loading past months)"
    )
    args = parser.parse_args()
    sys.exit(asyncio.run(main(args.file, not args.no_notify)))
