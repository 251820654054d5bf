"""Import meter readings from a file: ``python -m scripts.import_usage FILE``.

FILE is CSV (columns: account_no, date (YYYY-MM-DD) or month (YYYY-MM), kwh, and optionally
jian, feng, ping, gu), JSON (an array of objects with the same names, ``tou`` as an object) or
JSON Lines. Rows are checked one by one and sent per account through ``UsageService.put``;
bad rows are listed with their line and reasons. Exit status 0 when every row was imported,
1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from scripts.import_common import services
from wx_backend.imports import import_usage


async def main(path: Path) -> int:
    async with services() as app:
        report = await import_usage(app.usage, path)
    print(report.summary())
    return 1 if report.rejected else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Import daily or monthly readings (CSV, JSON or JSON Lines).")
    parser.add_argument("file", type=Path)
    args = parser.parse_args()
    sys.exit(asyncio.run(main(args.file)))
