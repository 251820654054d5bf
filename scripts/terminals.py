"""Service-hall terminals: register one (its secret is printed once), list, disable, enable.

python -m scripts.terminals register "郏县城关营业厅 1号机" [--id T01]
python -m scripts.terminals list
python -m scripts.terminals disable T01
python -m scripts.terminals enable T01
"""

from __future__ import annotations

import argparse
import sys

from scripts.admin import run_admin, services


async def run(args: argparse.Namespace) -> int:
    async with services() as ctx:
        terminals = ctx.terminals
        if args.command == "register":
            terminal_id, secret = await terminals.register(args.name, args.id)
            print(f"terminal_id {terminal_id}")
            print(f"secret {secret}")
            print(
                "Configure the terminal with this secret now: it is stored encrypted and never shown again.",
                file=sys.stderr,
            )
        elif args.command == "list":
            for t in await terminals.list():
                print(f"{t['terminal_id']}\t{t['status']}\t{t['name']}\t{t['created_at']:%Y-%m-%d %H:%M}")
        else:
            await terminals.set_enabled(args.terminal_id, args.command == "enable")
            print(f"{args.terminal_id} {'enabled' if args.command == 'enable' else 'disabled'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    reg = sub.add_parser("register", help="register a terminal; prints its id and secret once")
    reg.add_argument("name")
    reg.add_argument("--id", help="terminal id (default: generated, e.g. T1A2B3C4D)")
    sub.add_parser("list", help="list terminals (never their secrets)")
    for command in ("disable", "enable"):
        sub.add_parser(command).add_argument("terminal_id")
    args = parser.parse_args(argv)
    return run_admin(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
