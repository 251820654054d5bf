"""Proofs for the payments service, printed as counts:

1. ``N`` payments (default 200), JSAPI and payment code, with random faults (timeouts, system
   errors, duplicate, late, dropped and badly signed notifications) and a second backend
   process SIGKILLed in the middle of a payment and restarted: every order must end
   credited-once, reversed, closed or failed, and the credits must equal what the sandbox
   says customers paid, to the fen.
2. ``--storm`` orders (default 100) each notified 10 times, all concurrently: one credit each.

    python bench/prove_payments.py [--payments 200] [--storm 100] [--seed 7] [--api v2|v3]

``--api v3`` runs both with the backend on WeChat Pay API v3 (WX_PAY_API=v3): JSON orders and
payment codes, RSA-signed answers, encrypted notifications, the same books.

Runs its own FerretDB, sandbox and backends on free ports; exits non-zero if a check fails.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from conftest import Stack
from payments_chaos import chaos, duplicate_storm

from wx_backend.embedded import FerretDB


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--payments", type=int, default=200)
    parser.add_argument("--storm", type=int, default=100)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--api", choices=("v2", "v3"), default="v2", help="the WeChat Pay API of the backend")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="prove-payments-"))
    db = FerretDB(work / "ferretdb").start()
    ok = True
    try:
        if args.payments:
            (work / "chaos").mkdir()
            stack = Stack(work / "chaos", db.uri, extra_env={"WX_PAY_API": args.api}).start()
            try:
                result = chaos(stack, args.payments, seed=args.seed)
            finally:
                stack.stop()
            print(f"== payments with random faults and a killed process (WeChat Pay {args.api}) ==")
            print(json.dumps(result, ensure_ascii=False, indent=2, default=str))
            checks = {
                "every order final": result["not_final"] == 0,
                "one credit per credited order": result["credits"] == result["credited_orders"]
                and result["credits_without_credited_order"] == 0,
                "no account credited twice": result["markers_more_than_once"] == 0 and result["markers_missing"] == 0,
                "credits == sandbox paid (fen)": result["credit_fen"] == result["sandbox_paid_fen"]
                and result["credited_orders"] == result["sandbox_paid_count"],
                "balances rose by the credits": result["balance_gain_fen"] == result["credit_fen"],
                "credited orders are exactly WeChat's paid ones": not result["credited_vs_sandbox_paid_mismatch"],
            }
            for name, passed in checks.items():
                print(f"{'PASS' if passed else 'FAIL'} {name}")
                ok &= passed
        if args.storm:
            (work / "storm").mkdir()
            stack = Stack(work / "storm", db.uri, extra_env={"WX_PAY_API": args.api}).start()
            try:
                result = duplicate_storm(stack, orders=args.storm)
            finally:
                stack.stop()
            print(f"== concurrent duplicate notifications (WeChat Pay {args.api}) ==")
            print(json.dumps(result, ensure_ascii=False, indent=2, default=str))
            passed = (
                result["credits"] == result["credited_orders"] == result["markers"] == args.storm
                and result["balance_fen"] == result["expected_fen"]
            )
            print(f"{'PASS' if passed else 'FAIL'} {args.storm} credits for {result['notifications']} notifications")
            ok &= passed
    finally:
        db.stop()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
