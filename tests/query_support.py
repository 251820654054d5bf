"""Helpers for the query tests: bills and readings as the marketing system sends them."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from conftest import bind_account, put_account

from wx_backend.services.periods import add_months


def this_period() -> str:
    return datetime.now(UTC).astimezone(ZoneInfo("Asia/Shanghai")).strftime("%Y-%m")


def flat_bill(kwh: int, price: int, *, start: int = 1000, due: str = "2026-01-20", amount: int | None = None) -> dict:
    """A non-TOU bill: ``kwh`` at ``price`` (0.0001 yuan/kWh); amount rounded half up to the fen."""
    return {
        "amount_fen": (kwh * price + 50) // 100 if amount is None else amount,
        "due_date": due,
        "readings": {"previous": start, "current": start + kwh},
        "kwh": {"total": kwh},
        "prices": {"flat": price},
    }


def tou_bill(jian: int, feng: int, ping: int, gu: int, *, due: str = "2026-01-20") -> dict:
    prices = {"jian": 10500, "feng": 9000, "ping": 6000, "gu": 3000}
    kwh = {"jian": jian, "feng": feng, "ping": ping, "gu": gu}
    total = sum(kwh.values())
    amount = (sum(kwh[p] * prices[p] for p in kwh) + 50) // 100
    return {
        "amount_fen": amount,
        "due_date": due,
        "readings": {"previous": 0, "current": total},
        "kwh": {"total": total, **kwh},
        "prices": prices,
    }


def put_bill(stack, account_no: str, period: str, body: dict, expect=(200, 201)):
    resp = stack.internal("PUT", f"/internal/v1/accounts/{account_no}/bills/{period}", json=body)
    assert resp.status_code in expect, resp.text
    return resp


def put_usage(stack, account_no: str, entries: list[dict], expect=(200,)):
    resp = stack.internal("PUT", f"/internal/v1/accounts/{account_no}/usage", json={"entries": entries})
    assert resp.status_code in expect, resp.text
    return resp


def bound_account(stack, **fields) -> tuple[str, dict]:
    """A fresh account bound to a fresh user: ``(token, account)``."""
    account = put_account(stack, **fields)
    token = stack.login()
    bind_account(stack, token, account)
    return token, account


__all__ = ["add_months", "bound_account", "flat_bill", "put_bill", "put_usage", "this_period", "tou_bill"]
