"""Load the demo data into the configured database: ``python -m scripts.demo_data``."""

from __future__ import annotations

import asyncio

from wx_backend import db as dbmod
from wx_backend import demo
from wx_backend.config import Config


async def main() -> None:
    config = Config.from_env()
    client = dbmod.connect(config)
    try:
        database = client[config.db_name]
        await dbmod.ensure_indexes(database)
        summary = await demo.load(database, config)
        print("demo data:", ", ".join(f"{k}={v}" for k, v in summary.items()))
    finally:
        await client.close()


if __name__ == "__main__":
    asyncio.run(main())
