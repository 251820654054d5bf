"""What the operations scripts share around their own work: the configuration, the services,
the way a refusal is reported, and the exit status.

    def main(argv=None) -> int:
        args = parser.parse_args(argv)
        return run_admin(lambda: work(args))

    async def work(args) -> int:
        async with services() as ctx:
            ...

Exit status: what the work returns; 1 for a refusal by the service (``AppError``: code,
Chinese message and details on stderr); 2 for a configuration error.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from wx_backend.config import Config, ConfigError
from wx_backend.errors import AppError
from wx_backend.services.registry import Services


def run_admin(work: Callable[[], Awaitable[int]], *, refused_status: int = 1) -> int:
    """Run the script's coroutine function; report a refusal or a configuration error."""
    try:
        return asyncio.run(_reporting(work, refused_status))
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2


async def _reporting(work: Callable[[], Awaitable[int]], refused_status: int) -> int:
    try:
        return await work()
    except AppError as exc:
        print(f"error: {exc.code}: {exc.message}" + (f" {exc.details}" if exc.details else ""), file=sys.stderr)
        return refused_status


@asynccontextmanager
async def services() -> AsyncIterator[Services]:
    """The services (``services/registry.py``) on the configured database, closed after."""
    ctx = Services.connect(Config.from_env(document_workers=0), fail_fast=False)
    try:
        yield ctx
    finally:
        await ctx.close()
