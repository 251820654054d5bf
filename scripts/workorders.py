"""Work orders (工单) for operations staff: list, search, show and advance.

    python -m scripts.workorders list [--service CODE] [--stage CODE] [--account NO]
                                      [--since YYYY-MM-DD] [--until YYYY-MM-DD] [--limit N]
    python -m scripts.workorders search TEXT          # an application number (or its start) or a 户号
    python -m scripts.workorders show APP_NO          # the application and its timeline
    python -m scripts.workorders advance APP_NO STAGE --operator NAME [--note TEXT]

Reads the same configuration as the server (WX_* variables). ``advance`` goes through the
same service method as the marketing system's ``/internal/v1/applications/{no}/stage``
(source ``admin``): only the catalogue's next stages, recorded with the operator and note,
the customer notified, and the change sent to the marketing system's webhook. Personal data
is shown masked. Exit status 0 on success, 1 when refused, 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import unicodedata
from datetime import datetime, time, timedelta
from typing import Any

from wx_backend.config import Config
from wx_backend.errors import AppError
from wx_backend.services.application_views import local_iso
from wx_backend.services.applications import ApplicationService
from wx_backend.services.periods import SHANGHAI
from wx_backend.services.registry import Services
from wx_backend.validators import is_account_no, matches


def width(text: str) -> int:
    """Columns a string takes in a terminal: East Asian wide and full-width characters take two."""
    return sum(
        2 if unicodedata.east_asian_width(ch) in ("W", "F") else 0 if unicodedata.combining(ch) else 1 for ch in text
    )


def pad(text: str, columns: int) -> str:
    return text + " " * max(columns - width(text), 0)


def table(headers: list[str], rows: list[list[Any]]) -> str:
    """Plain-text columns, aligned for Chinese text too."""
    cells = [[("" if v is None else str(v)).replace("\n", " ") for v in row] for row in rows]
    widths = [max([width(h)] + [width(r[i]) for r in cells]) for i, h in enumerate(headers)]
    lines = [
        "  ".join(pad(h, w) for h, w in zip(headers, widths, strict=True)).rstrip(),
        "  ".join("-" * w for w in widths),
    ]
    lines += ["  ".join(pad(c, w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    return "\n".join(lines)


def short_time(value: datetime | None) -> str:
    return value.astimezone(SHANGHAI).strftime("%Y-%m-%d %H:%M") if value else ""


def local_date(text: str) -> datetime:
    try:
        day = datetime.strptime(text, "%Y-%m-%d").date()
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text}") from None
    return datetime.combine(day, time(0, 0), tzinfo=SHANGHAI)


class WorkOrders:
    """The script's view of ``ApplicationService`` (no rule lives here)."""

    def __init__(self, service: ApplicationService):
        self.service = service
        self.catalog = service.catalog

    def rows(self, docs: list[dict[str, Any]]) -> str:
        rows = []
        for doc in docs:
            stype = self.catalog.get(doc["service"])
            stage = stype.stage_index.get(doc["stage"], {}).get("name", doc["stage"])
            rows.append(
                [
                    doc["app_no"],
                    stype.name,
                    doc.get("account_no") or "（新装）",
                    stage,
                    self.service.views.public(doc)["status_name"],
                    short_time(doc["created_at"]),
                    short_time(doc["updated_at"]),
                ]
            )
        return table(["申请编号", "业务", "户号", "环节", "状态", "提交时间", "更新时间"], rows)

    def show(self, doc: dict[str, Any]) -> str:
        view = self.service.views.public(doc, detailed=True)
        stype = self.catalog.get(doc["service"])
        head = [
            ["申请编号", view["app_no"]],
            ["业务", f"{view['service_name']}（{view['service']}）"],
            ["户号", view["account_no"] or "（新装，无户号）"],
            ["环节", f"{view['stage_name']}（{view['stage']}）"],
            ["状态", view["status_name"]],
            ["合同编号", view["contract_no"] or ""],
            ["提交时间", view["created_at"]],
            ["客户须办理", view["next_action"]["text"]],
            [
                "可转到",
                "、".join(
                    f"{stype.stage_index[s]['name']}（{s}）"
                    for s in self.catalog.next_stages(doc["service"], doc["stage"])
                )
                or "无（已结束）",
            ],
        ]
        labelled = [[f["label"], f["value"]] for f in view["fields"]]
        timeline = [
            [
                short_time(h["at"]),
                stype.stage_index.get(h["stage"], {}).get("name", h["stage"]),
                h.get("operator", ""),
                h.get("source", ""),
                h.get("note", ""),
            ]
            for h in doc.get("history", [])
        ]
        return "\n\n".join(
            [
                table(["项目", "内容"], head),
                table(["字段", "填写内容（已脱敏）"], labelled),
                table(["时间", "环节", "操作人", "来源", "备注"], timeline),
            ]
        )


async def run(args: argparse.Namespace) -> int:
    services = Services.connect(Config.from_env(), fail_fast=False)
    try:
        orders = WorkOrders(services.applications)
        service = orders.service
        if args.command == "list":
            until = args.until + timedelta(days=1) if args.until else None
            docs = await service.search(
                service=args.service,
                stage=args.stage,
                account_no=args.account,
                since=args.since,
                until=until,
                limit=args.limit,
            )
            print(orders.rows(docs))
            print(f"\n共 {len(docs)} 条" + ("（已达 --limit 上限）" if len(docs) == args.limit else ""))
        elif args.command == "search":
            text = args.text.strip()
            if is_account_no(text):
                docs = await service.search(account_no=text, limit=args.limit)
            elif matches("app_no_prefix", text):
                docs = await service.search(app_no=text, limit=args.limit)
            else:
                print("请输入申请编号（或其开头）或 10 位户号", file=sys.stderr)
                return 2
            print(orders.rows(docs))
            print(f"\n共 {len(docs)} 条")
        elif args.command == "show":
            print(orders.show(await service.get(args.app_no)))
        elif args.command == "advance":
            doc = await service.advance(args.app_no, args.stage, operator=args.operator, note=args.note, source="admin")
            stype = orders.catalog.get(doc["service"])
            print(
                f"{doc['app_no']} 当前环节：{stype.stage_index[doc['stage']]['name']}（{doc['stage']}），"
                f"办理记录 {len(doc['history'])} 条，更新于 {local_iso(doc['updated_at'])}"
            )
        return 0
    except AppError as exc:
        print(f"{exc.message}（{exc.code}）", file=sys.stderr)
        if isinstance(exc.details, dict) and "allowed" in exc.details:
            print("可转到：" + (", ".join(exc.details["allowed"]) or "无"), file=sys.stderr)
        elif isinstance(exc.details, list):
            for item in exc.details:
                print(f"  {item.get('field')}: {item.get('message')}", file=sys.stderr)
        return 1
    finally:
        await services.close()


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m scripts.workorders", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(dest="command", required=True)
    ls = sub.add_parser("list", help="list work orders, newest first")
    ls.add_argument("--service", help="catalogue code, e.g. enterprise_new")
    ls.add_argument("--stage", help="stage code, e.g. survey")
    ls.add_argument("--account", help="户号 (10 digits)")
    ls.add_argument("--since", type=local_date, help="submitted on or after this day (Asia/Shanghai)")
    ls.add_argument("--until", type=local_date, help="submitted on or before this day (Asia/Shanghai)")
    ls.add_argument("--limit", type=int, default=50)
    se = sub.add_parser("search", help="by application number (or its start) or 户号")
    se.add_argument("text")
    se.add_argument("--limit", type=int, default=50)
    sh = sub.add_parser("show", help="one application and its timeline")
    sh.add_argument("app_no")
    ad = sub.add_parser("advance", help="move a work order to a next stage")
    ad.add_argument("app_no")
    ad.add_argument("stage", help="stage code, e.g. accepted")
    ad.add_argument("--operator", required=True, help="who does it (recorded in the history)")
    ad.add_argument("--note", default="", help="note shown to the customer in the timeline")
    return p


def main(argv: list[str] | None = None) -> int:
    return asyncio.run(run(parser().parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
