"""What the official account's pages show, prepared on the server: money as text, a bill's
tiers, the 12-month usage chart as inline SVG, and the page behind a template message's ``url``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

from .validators import is_account_no

TIER_NAMES = {1: "第一档", 2: "第二档", 3: "第三档"}
TOU_NAMES = {"jian": "尖", "feng": "峰", "ping": "平", "gu": "谷"}
CHART_W, CHART_H, CHART_PAD, CHART_BOTTOM = 343, 200, 8, 28


def yuan(fen: int | None) -> str:
    """Integer fen as yuan text: 12345 -> ``123.45`` (no floats)."""
    if fen is None:
        return "—"
    sign = "-" if fen < 0 else ""
    fen = abs(int(fen))
    return f"{sign}{fen // 100}.{fen % 100:02d}"


def price_text(price: int | None) -> str:
    """A price in 0.0001 yuan/kWh as yuan: 5600 -> ``0.5600``."""
    if price is None:
        return "—"
    return f"{price // 10000}.{price % 10000:04d}"


def bill_page(bill: dict[str, Any]) -> dict[str, Any]:
    """The bill's view plus the rows the page shows (tiers, TOU periods) as text."""
    tiers = [
        {
            "name": TIER_NAMES.get(t["tier"], f"第{t['tier']}档"),
            "range": f"{t['upto_kwh']} kWh 以内" if t.get("upto_kwh") is not None else "以上",
            "kwh": t["kwh"],
            "price": price_text(t["price"]),
        }
        for t in bill.get("tiers") or []
    ]
    periods = [{"name": TOU_NAMES[p], "kwh": kwh} for p, kwh in (bill.get("kwh_by_period") or {}).items()]
    return {"bill": bill, "tiers": tiers, "periods": periods, "avg_price": price_text(bill.get("avg_price"))}


def usage_chart(months: list[dict[str, Any]]) -> dict[str, Any]:
    """The last 12 months' kWh as bars: ``{width, height, bars, max_kwh}`` for an inline SVG."""
    months = months[-12:]
    top = max([m["kwh"] or 0 for m in months] + [1])
    slot = (CHART_W - 2 * CHART_PAD) / max(len(months), 1)
    height = CHART_H - CHART_BOTTOM - CHART_PAD
    bars = []
    for i, m in enumerate(months):
        kwh = m["kwh"] or 0
        h = round(height * kwh / top, 1)
        x = round(CHART_PAD + i * slot + slot * 0.15, 1)
        bars.append(
            {
                "x": x,
                "y": round(CHART_PAD + height - h, 1),
                "w": round(slot * 0.7, 1),
                "h": h,
                "label": m["period"][5:],
                "period": m["period"],
                "kwh": m["kwh"],
                "text_x": round(x + slot * 0.35, 1),
            }
        )
    return {"width": CHART_W, "height": CHART_H, "bars": bars, "max_kwh": top, "axis_y": CHART_H - CHART_BOTTOM}


def page_url(public_base: str, page: str) -> str:
    """The H5 page matching a mini-program page of the message catalogue (``pages/bills/detail?
    account_no=…&period=…`` -> ``/h5/accounts/…/bills/…``); the home page for any other."""
    base = public_base.rstrip("/") + "/h5/"
    parts = urlsplit(page or "")
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    account = query.get("account_no")
    account = account if is_account_no(account) else None
    path = parts.path.strip("/")
    if path == "pages/bills/detail" and account and query.get("period"):
        return f"{base}accounts/{account}/bills/{quote(query['period'])}"
    if path in ("pages/payments/index", "pages/supply/index") and account:
        return f"{base}accounts/{account}/bills"
    if path == "pages/applications/detail" and query.get("app_no"):
        return f"{base}applications/{quote(query['app_no'])}"
    if path == "pages/contract/sign" and query.get("contract_no"):
        return f"{base}contracts/{quote(query['contract_no'])}"
    if path == "pages/outages/index":
        return f"{base}outages" + (f"?account_no={account}" if account else "")
    return base
