"""Waiting on conditions instead of sleeping: until something happened, or until the outbox
worker has nothing left to do for a test's messages (then "nothing more was sent" is counted,
not hoped for after a sleep)."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any


def wait_until(check: Callable[[], Any], timeout: float = 20.0, step: float = 0.05, what: str = "condition") -> Any:
    """``check()``'s first truthy value; ``AssertionError`` naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached in {timeout} s")
        time.sleep(step)


def outbox_idle(db: Any, match: dict[str, Any], timeout: float = 20.0) -> None:
    """Wait until no outbox message matching ``match`` is due or being sent: whatever the worker
    was going to send for them has been sent (retries scheduled later do not count as due)."""

    def idle() -> bool:
        now = datetime.now(UTC)
        busy = {"$or": [{"status": "sending"}, {"status": "queued", "next_try_at": {"$lte": now}}]}
        return db.outbox.count_documents({"$and": [match, busy]}) == 0

    wait_until(idle, timeout, what="outbox idle")


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """Something accepts connections on ``port``."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False
