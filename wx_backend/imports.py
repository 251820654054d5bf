"""File imports for the admin scripts (``scripts/import_bills.py``, ``scripts/import_usage.py``).

A file is CSV (header row), JSON (an array of objects) or JSON Lines (``.jsonl``, one object
a line). Each row goes through the same service method as the marketing system's HTTP call
(``BillService.upsert``, ``UsageService.put``); a bad row is rejected with its line number
and reasons and never stops or changes the others. Progress goes to stderr as one line
rewritten in place; the summary is returned for printing.
"""

from __future__ import annotations

import csv
import json
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from .errors import AppError
from .services.billing import BillService
from .services.usage import UsageService, check_entry
from .validators import MESSAGES, is_account_no, matches

BATCH = 500


@dataclass
class ImportReport:
    label: str
    read: int = 0
    created: int = 0
    updated: int = 0
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (where, reasons)

    @property
    def upserted(self) -> int:
        return self.created + self.updated

    def reject(self, where: str, reasons: str) -> None:
        self.rejected.append((where, reasons))

    def summary(self) -> str:
        lines = [
            f"{self.label}: rows read {self.read}, upserted {self.upserted} "
            f"(created {self.created}, updated {self.updated}), rejected {len(self.rejected)}"
        ]
        lines += [f"  {where}: {reasons}" for where, reasons in self.rejected]
        return "\n".join(lines)


class Progress:
    """``label: 1200/5000 rows (24%)`` on stderr, rewritten with ``\\r`` at most 10 times a second."""

    def __init__(self, label: str, total: int, stream: TextIO | None = None):
        self.label, self.total, self.stream = label, total, stream or sys.stderr
        self._last = 0.0

    def update(self, done: int, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < 0.1:
            return
        self._last = now
        pct = f" ({100 * done // self.total}%)" if self.total else ""
        self.stream.write(f"\r{self.label}: {done}/{self.total} rows{pct}")
        self.stream.flush()

    def close(self, done: int) -> None:
        self.update(done, force=True)
        self.stream.write("\n")
        self.stream.flush()


def _cell(value: str | None) -> str | None:
    if value is None:
        return None
    return value.strip() or None


def _num(value: Any) -> Any:
    """An integer cell as int; anything else unchanged, for the service to refuse by name."""
    return int(value) if matches("integer", value) else value


def read_rows(path: Path) -> tuple[int, Iterator[tuple[str, Any]]]:
    """``(row count, rows)``; each row is ``(where, object)`` with ``where`` like ``line 7``.

    A line that is not valid JSON comes out as ``(where, None)``: the caller rejects it.
    """
    suffix = path.suffix.lower()
    if suffix == ".csv":
        with open(path, newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.DictReader(fh))

        def csv_rows() -> Iterator[tuple[str, Any]]:
            for i, row in enumerate(rows):
                yield f"line {i + 2}", {k.strip(): _cell(v) for k, v in row.items() if k}

        return len(rows), csv_rows()
    if suffix == ".jsonl":
        lines = path.read_text(encoding="utf-8").splitlines()
        numbered = [(i + 1, line) for i, line in enumerate(lines) if line.strip()]

        def jsonl_rows() -> Iterator[tuple[str, Any]]:
            for number, line in numbered:
                try:
                    yield f"line {number}", json.loads(line)
                except ValueError:
                    yield f"line {number}", None

        return len(numbered), jsonl_rows()
    if suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, list):
            raise ValueError("a .json import file holds an array of objects")
        return len(data), ((f"item {i + 1}", row) for i, row in enumerate(data))
    raise ValueError(f"unsupported file type {suffix!r}: use .csv, .json or .jsonl")


def _reasons(exc: AppError) -> str:
    if isinstance(exc.details, list) and exc.details:
        return "; ".join(f"{d.get('field')}: {d.get('message')}" for d in exc.details if isinstance(d, dict))
    return f"{exc.code}: {exc.message}"


# -- bills ------------------------------------------------------------------------------------
def bill_from_csv(row: dict[str, Any]) -> dict[str, Any]:
    """A CSV row (flat columns) as the nested body of ``PUT .../bills/{period}``."""
    row = {k: (v if k in ("due_date",) else _num(v)) for k, v in row.items()}

    def pick(prefix: str, names: tuple[str, ...]) -> dict[str, Any]:
        return {n: row[f"{prefix}{n}"] for n in names if row.get(f"{prefix}{n}") is not None}

    body: dict[str, Any] = {
        "amount_fen": row.get("amount_fen"),
        "due_date": row.get("due_date"),
        "readings": {
            "previous": row.get("reading_previous"),
            "current": row.get("reading_current"),
            **({"multiplier": row["multiplier"]} if row.get("multiplier") is not None else {}),
        },
        "kwh": {"total": row.get("kwh_total"), **pick("kwh_", ("jian", "feng", "ping", "gu"))},
        "prices": pick("price_", ("flat", "jian", "feng", "ping", "gu")),
    }
    tiers = []
    for n in (1, 2, 3):
        if row.get(f"tier{n}_kwh") is None and row.get(f"tier{n}_price") is None:
            break
        tiers.append(
            {
                "tier": n,
                "upto_kwh": row.get(f"tier{n}_upto"),
                "kwh": row.get(f"tier{n}_kwh"),
                "price": row.get(f"tier{n}_price"),
            }
        )
    if tiers:
        body["tiers"] = tiers
    if row.get("offline_paid_fen") is not None:
        body["offline_paid_fen"] = row["offline_paid_fen"]
    return body


async def import_bills(
    bills: BillService, path: Path, *, notify: bool = True, stream: TextIO | None = None
) -> ImportReport:
    report = ImportReport("bills")
    total, rows = read_rows(path)
    progress = Progress("bills", total, stream)
    csv_file = path.suffix.lower() == ".csv"
    for where, row in rows:
        report.read += 1
        progress.update(report.read)
        if not isinstance(row, dict):
            report.reject(where, "not a JSON object")
            continue
        row = dict(row)
        account_no, period = row.pop("account_no", None), row.pop("period", None)
        account_no = str(account_no) if isinstance(account_no, int) else account_no
        body = bill_from_csv(row) if csv_file else row
        try:
            _, created = await bills.upsert(account_no, period, body, notify=notify)
        except AppError as exc:
            report.reject(where, _reasons(exc) if exc.code != "account_not_found" else "unknown account")
            continue
        if created:
            report.created += 1
        else:
            report.updated += 1
    progress.close(report.read)
    return report


# -- readings ---------------------------------------------------------------------------------
def usage_from_csv(row: dict[str, Any]) -> dict[str, Any]:
    entry = {k: row[k] for k in ("date", "month") if row.get(k) is not None}
    entry["kwh"] = _num(row.get("kwh"))
    tou = {p: _num(row[p]) for p in ("jian", "feng", "ping", "gu") if row.get(p) is not None}
    if tou:
        entry["tou"] = tou
    return entry


async def import_usage(usage: UsageService, path: Path, *, stream: TextIO | None = None) -> ImportReport:
    """Readings, one a row (``account_no`` and ``date`` or ``month``, ``kwh``, optional ``jian``…).

    Each row is checked alone (``check_entry``); good rows are sent in batches per account
    through ``UsageService.put``; a batch refused as a whole (an unknown account) rejects its
    rows, each by line.
    """
    report = ImportReport("usage")
    total, rows = read_rows(path)
    progress = Progress("usage", total, stream)
    csv_file = path.suffix.lower() == ".csv"
    pending: dict[str, list[tuple[str, dict[str, Any]]]] = {}

    async def flush(account_no: str) -> None:
        batch = pending.pop(account_no, [])
        if not batch:
            return
        try:
            result = await usage.put(account_no, [entry for _, entry in batch])
        except AppError as exc:
            reason = "unknown account" if exc.code == "account_not_found" else _reasons(exc)
            for where, _ in batch:
                report.reject(where, reason)
            return
        report.created += result["created"]
        report.updated += result["updated"]

    for where, row in rows:
        report.read += 1
        progress.update(report.read)
        if not isinstance(row, dict):
            report.reject(where, "not a JSON object")
            continue
        row = dict(row)
        account_no = row.pop("account_no", None)
        account_no = str(account_no) if isinstance(account_no, int) else account_no
        if not is_account_no(account_no):
            report.reject(where, f"account_no: {MESSAGES['account_no']}")
            continue
        entry = usage_from_csv(row) if csv_file else row
        _, errors = check_entry(entry, "row")
        if errors:
            report.reject(where, "; ".join(f"{e['field'].removeprefix('row.')}: {e['message']}" for e in errors))
            continue
        batch = pending.setdefault(account_no, [])
        if any(e.get("date", e.get("month")) == entry.get("date", entry.get("month")) for _, e in batch):
            await flush(account_no)  # the same day twice: the later row wins
            batch = pending.setdefault(account_no, [])
        batch.append((where, entry))
        if len(batch) >= BATCH:
            await flush(account_no)
    for account_no in list(pending):
        await flush(account_no)
    progress.close(report.read)
    return report
