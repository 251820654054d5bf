"""Refund part or all of a credited payment, once per refund number.

    python -m scripts.refund OUT_TRADE_NO --amount-fen N --refund-no R [--reason TEXT]

WeChat Pay first *accepts* a refund; it is refunded (or closed) later, and only then is the
account's balance debited and bills the payment settled re-opened for the part of the refund
beyond what the payment left as balance (newest period first). The refund notification and
the payment follow-up bring the outcome in; running this again with the same refund number
shows where the refund stands and never refunds twice. A refusal WeChat calls temporary
(NOTENOUGH: the merchant's balance; FREQUENCY_LIMITED) leaves the refund requested, and the
follow-up asks again. Exit code 0 when the refund is recorded, 1 when refused. See
docs/payments.md.
"""

from __future__ import annotations

import argparse
import sys

from scripts.admin import run_admin, services


async def run(args: argparse.Namespace) -> int:
    async with services() as ctx:
        refund = await ctx.payments.refund(args.out_trade_no, args.amount_fen, args.refund_no, args.reason)
    print(
        f"refund {refund['_id']} of {args.out_trade_no}: {refund['amount_fen']} fen, {refund['state']}"
        f" (WeChat refund_id {refund.get('refund_id')})"
    )
    print(STATES.get(refund["state"], "").format(err=refund.get("last_err_code")))
    return 0


STATES = {
    "requested": "微信支付暂不受理（{err}），退款已登记，将自动重试",
    "accepted": "微信支付已受理，退款结果以微信通知或查询为准；到账后才扣减余额",
    "succeeded": "已退款，余额与账单已调整",
    "closed": "微信支付已关闭该退款，未扣减余额，可用新退款单号重新申请",
    "change": "退款异常（CHANGE）：款项退回商户，请在商户平台手工处理",
}


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
