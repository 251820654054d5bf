"""Refund part or all of a credited payment, once per refund number.

    python -m scripts.refund OUT_TRADE_NO --amount-fen N --refund-no R [--reason TEXT]

Running it again with the same refund number does not refund twice: it reports the refund,
or finishes one that was interrupted (WeChat unreachable). The account's balance is debited
once; bills the payment settled are re-opened for the part of the refund beyond what the
payment left as balance (newest period first). See docs/payments.md.
"""

from __future__ import annotations

import argparse
import sys

from scripts.admin import run_admin, services


async def run(args: argparse.Namespace) -> int:
    async with services() as ctx:
        refund = await ctx.payments.refund(args.out_trade_no, args.amount_fen, args.refund_no, args.reason)
    print(f"refund {refund['_id']} of {args.out_trade_no}: {refund['amount_fen']} fen, {refund['state']}"
          f" (WeChat refund_id {refund.get('refund_id')})")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_trade_no")
    parser.add_argument("--amount-fen", type=int, required=True)
    parser.add_argument("--refund-no", required=True, help="your refund number; reuse it to retry")
    parser.add_argument("--reason", default=None)
    args = parser.parse_args(argv)
    return run_admin(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
