"""Peak memory of one backend process under the loads of bench_bills.py and bench_orders.py.

    python bench/bench_memory.py [--requests 3000] [--orders 1000] [--bills 24] [--concurrency 32]
                                 [--duration 60] [--latency-ms 300]

One backend process serves, one after the other, the bills list (``--requests`` GETs of an
account with ``--bills`` bills) and JSAPI order creation with the sandbox ``--latency-ms`` late
(``--orders`` POSTs), each with ``--concurrency`` clients and at most ``--duration`` seconds.
Prints the process's resident-memory high-water mark (``VmHWM`` in ``/proc/<pid>/status``)
and current size (``VmRSS``) before set-up and after each load, in MiB.
"""

from __future__ import annotations

import argparse

from _stack import header, peak_rss_kib, run_load, running_stack
from bench_bills import bills_request, customer_with_bills
from bench_orders import orders_request, set_latency
from payments_support import customer


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000, help="bills list GETs")
    parser.add_argument("--orders", type=int, default=1000, help="order POSTs")
    parser.add_argument("--bills", type=int, default=24, help="bills of the account listed")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds at most per load")
    parser.add_argument("--latency-ms", type=float, default=300.0, help="added to every WeChat call")
    return parser.parse_args(argv)


def run(stack, args: argparse.Namespace) -> None:
    header("peak memory of one backend process", args, "bench_memory.py")
    pid = stack.apps[0].proc.pid

    def report(stage: str) -> None:
        hwm, rss = peak_rss_kib(pid)
        print(f"{stage:<46} VmHWM {hwm / 1024:7.1f} MiB   VmRSS {rss / 1024:7.1f} MiB", flush=True)

    report("before set-up")
    token, path = customer_with_bills(stack, args.bills)
    cust = customer(stack)
    report(f"after set-up (2 customers, {args.bills} bills)")
    run_load(
        "bills list",
        bills_request(stack, token, path),
        requests=args.requests,
        concurrency=args.concurrency,
        duration=args.duration,
    )
    report("after the bills load")
    set_latency(stack, args.latency_ms)
    try:
        run_load(
            "orders (slow WeChat)",
            orders_request(stack, cust),
            expect=201,
            requests=args.orders,
            concurrency=args.concurrency,
            duration=args.duration,
        )
    finally:
        set_latency(stack, 0)
    report(f"after the orders load ({args.latency_ms:.0f} ms WeChat latency)")


def main() -> None:
    with running_stack("memory") as stack:
        run(stack, parse())


if __name__ == "__main__":
    main()
