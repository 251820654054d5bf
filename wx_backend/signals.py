"""The end of a long-running process: its servers and workers wait here for SIGINT or SIGTERM."""

from __future__ import annotations

import asyncio
import signal


async def stop_requested() -> None:
    """Return when SIGINT (Ctrl-C) or SIGTERM (``kill``, systemd, the test stack) arrives."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
