"""Load the demo data into the configured database: ``python -m scripts.demo_data [--accounts N]``."""

from __future__ import annotations

import argparse
import asyncio

from wx_backend import demo
from wx_backend.config import Config
from wx_backend.services.registry import Services


async def main(accounts: int) -> None:
    services = Services.connect(Config.from_env(), fail_fast=False)
    try:
        await services.ensure_indexes()
        summary = await demo.load(services, accounts=accounts)
        print("demo data:", ", ".join(f"{k}={v}" for k, v in summary.items()))
    finally:
        await services.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Load the demo data (idempotent).")
    parser.add_argument(
        "--accounts", type=int, default=demo.DEMO_ACCOUNTS, help="how many demo accounts, each with 24 months of bills"
    )
    asyncio.run(main(parser.parse_args().accounts))
