"""The end of a long-running process: its servers and workers wait here for SIGINT or SIGTERM."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable


async def stop_requested() -> None:
    """Return when SIGINT (Ctrl-C) or SIGTERM (``kill``, systemd, the test stack) arrives."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def run_until_stopped(work: Awaitable[None]) -> None:
    """Run ``work`` (a worker's loop) until a stop signal, then cancel it and let it unwind."""
    task = asyncio.ensure_future(work)
    await stop_requested()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
