"""What waits on the marketing system: ``python -m scripts.pending COMMAND [--older-than MINUTES]``.

  invoices        invoice requests not yet issued or refused, oldest first
  reconnections   accounts shown 复电处理中 (a payment arrived while cut off, the reconnection
                  was requested) for which no ``restored`` event has come

``--older-than`` (default 60) leaves out what is younger than that many minutes. ``--json``
prints the list as JSON. Exit status 0 when nothing waits, 3 when something does (for a
monitoring check), 2 for a configuration error. See docs/invoices.md and docs/payments.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import timedelta

from scripts.admin import run_admin, services
from wx_backend.services.invoices import pending_invoices
from wx_backend.services.notifications import SHANGHAI
from wx_backend.services.supply import stuck_reconnections


def _time(value) -> str:
    return value.astimezone(SHANGHAI).strftime("%Y-%m-%d %H:%M") if value else "-"


async def run(args: argparse.Namespace) -> int:
    older = timedelta(minutes=args.older_than)
    async with services() as ctx:
        if args.command == "invoices":
            rows = [
                {
                    "invoice_id": d["_id"],
                    "out_trade_no": d["out_trade_no"],
                    "account_no": d["account_no"],
                    "amount_fen": d["amount_fen"],
                    "attempt": d["attempt"],
                    "requested_at": _time(d["requested_at"]),
                }
                for d in await pending_invoices(ctx.db, older)
            ]
        else:
            rows = [
                {
                    "account_no": d["_id"],
                    "out_trade_no": d["reconnect"]["out_trade_no"],
                    "cut_off_at": _time(d.get("cut_at")),
                    "requested_at": _time(d["reconnect"]["requested_at"]),
                }
                for d in await stuck_reconnections(ctx.db, older)
            ]
    if args.json:
        print(json.dumps(rows, ensure_ascii=False, indent=1))
    else:
        for row in rows:
            print("  ".join(f"{k}={v}" for k, v in row.items()))
        print(f"{len(rows)} {args.command} waiting longer than {args.older_than} min")
    return 3 if rows else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["invoices", "reconnections"])
    parser.add_argument("--older-than", type=float, default=60.0, metavar="MINUTES")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    return run_admin(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
