"""Load the demo data into the configured database: ``python -m scripts.demo_data [--accounts N]``."""

from __future__ import annotations

import argparse
import asyncio

from wx_backend import db as dbmod
from wx_backend import demo
from wx_backend.config import Config


async def main(accounts: int) -> None:
    config = Config.from_env()
    client = dbmod.connect(config, fail_fast=False)
    try:
        database = client[config.db_name]
        await dbmod.ensure_indexes(database)
        summary = await demo.load(database, config, accounts=accounts)
        print("demo data:", ", ".join(f"{k}={v}" for k, v in summary.items()))
    finally:
        await client.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Load the demo data (idempotent).")
    parser.add_argument("--accounts", type=int, default=demo.DEMO_ACCOUNTS,
                        help="how many demo accounts, each with 24 months of bills")
    asyncio.run(main(parser.parse_args().accounts))
