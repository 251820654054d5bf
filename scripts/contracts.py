"""Contracts from the command line, through the same service as the API (``app.contracts``).

    python -m scripts.contracts issue APP_NO --template hv_new_connection --terms terms.json \\
        [--term-months 12] [--operator NAME]
    python -m scripts.contracts show CONTRACT_NO [--json]      # status and the signature report
    python -m scripts.contracts verify FILE [--root OLD.pem] [--at 2037-12-01T00:00:00+08:00] [--json]

The configuration is the backend's (``WX_*`` variables, the database, the seal authority).
``verify`` trusts the configured seal authority's root plus any ``--root`` given, the TSA roots
(``WX_TSA_ROOTS``) for timestamps, and consults the authority's current CRL; ``--at`` validates
as of another time (e.g. years ahead: what a court would see then). Exit status
0 on success (for ``show`` and ``verify``: every signature ok), 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from datetime import datetime
from pathlib import Path

from scripts.admin import run_admin
from wx_backend.config import Config
from wx_backend.services.registry import Services


def _moment(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError("give a UTC offset, e.g. 2037-12-01T00:00:00+08:00")
    return value


def _print_report(report: dict, as_json: bool) -> None:
    from scripts.verify_pdf import print_table  # (imports pyHanko: only when printing)

    if as_json:
        print(json.dumps(report, ensure_ascii=False, indent=2))
        return
    print_table(report)
    print(f"sha256: {report['sha256']}")
    print(f"\nresult: {'OK' if report['ok'] else 'FAILED'}")


async def run(args: argparse.Namespace) -> int:
    config = Config.from_env(document_workers=0)  # one job: no worker processes to start
    services = Services.connect(config, fail_fast=False)
    try:
        contracts = services.contracts
        if args.command == "issue":
            terms = args.terms_data
            doc, created = await contracts.issue(
                args.app_no,
                {
                    "template": args.template,
                    "terms": terms,
                    "term_months": args.term_months,
                },
                operator=args.operator,
            )
            view = contracts.view(doc)
            print(json.dumps({"created": created, "contract": view}, ensure_ascii=False, indent=2, default=str))
            return 0
        if args.command == "show":
            doc = await contracts.get(args.contract_no)
            view = contracts.view(doc)
            print(
                f"{view['contract_no']}  {view['title']}  {view['status_label']} ({view['status']})  "
                f"application {view['app_no']}  account {view['account_no']}"
            )
            print(f"term {view['term_months']} months: {view['start_date'] or '-'} .. {view['end_date'] or '-'}")
            if doc["status"] != "effective":
                return 0
            report = await contracts.verify(await contracts.signed_pdf(args.contract_no))
            _print_report(report, args.json)
            return 0 if report["ok"] else 1
        report = await contracts.verify(args.pdf, args.roots, at=args.at)
        _print_report(report, args.json)
        return 0 if report["ok"] else 1
    finally:
        await services.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    issue = sub.add_parser("issue", help="issue the contract of an application (moves it to 合同签订)")
    issue.add_argument("app_no")
    issue.add_argument("--template", required=True)
    issue.add_argument("--terms", required=True, help="JSON file with the contract terms")
    issue.add_argument("--term-months", type=int, default=12)
    issue.add_argument("--operator", default="admin")
    show = sub.add_parser("show", help="a contract's status and, once signed, its signature report")
    show.add_argument("contract_no")
    show.add_argument("--json", action="store_true")
    verify = sub.add_parser("verify", help="verify a signed contract PDF")
    verify.add_argument("file")
    verify.add_argument("--root", action="append", default=[], help="another trusted root (PEM)")
    verify.add_argument("--at", type=_moment, help="validation time, ISO 8601 with a UTC offset (default: now)")
    verify.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    logging.getLogger("pyhanko").setLevel(logging.CRITICAL)
    # inputs are read before the event loop starts
    if args.command == "issue":
        args.terms_data = json.loads(Path(args.terms).read_text(encoding="utf-8"))
    elif args.command == "verify":
        args.pdf = Path(args.file).read_bytes()
        args.roots = tuple(Path(p).read_bytes() for p in args.root)
    return run_admin(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
