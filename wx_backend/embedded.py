"""The embedded development database: FerretDB on SQLite, started as a child process.

Used by ``make run`` and by the test suite; production points ``MONGODB_URI`` at MongoDB.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ferretdb_binary() -> Path:
    """The FerretDB binary, built into the cache folder on first use."""
    out = subprocess.run(
        [str(ROOT / "scripts" / "install-ferretdb.sh")],
        check=True,
        capture_output=True,
        text=True,
    )
    return Path(out.stdout.strip().splitlines()[-1])


def wait_for_port(port: int, timeout: float = 30.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on 127.0.0.1:{port} after {timeout:.0f} s")


class FerretDB:
    """One FerretDB server on loopback, telemetry disabled, data in ``data_dir``."""

    def __init__(self, data_dir: Path, port: int | None = None, log_path: Path | None = None):
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.log_path = log_path or self.data_dir / "ferretdb.log"
        self.proc: subprocess.Popen | None = None

    @property
    def uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/"

    def start(self) -> FerretDB:
        binary = ferretdb_binary()
        (self.data_dir / "sqlite").mkdir(parents=True, exist_ok=True)
        (self.data_dir / "state").mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [
                str(binary),
                "--handler=sqlite",
                # synchronous(normal): a commit reaches the write-ahead log without waiting for the
                # disk, as MongoDB's default write concern does not wait for its journal
                f"--sqlite-url=file:{self.data_dir / 'sqlite'}/?_pragma=synchronous(normal)",
                f"--listen-addr=127.0.0.1:{self.port}",
                f"--state-dir={self.data_dir / 'state'}",
                "--telemetry=disable",
                "--debug-addr=-",
                "--log-level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "FERRETDB_TELEMETRY": "disable", "DO_NOT_TRACK": "1"},
        )
        log.close()
        wait_for_port(self.port, proc=self.proc)
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


@contextmanager
def database_uri(data_dir: Path) -> Iterator[str]:
    """``MONGODB_URI`` when set; otherwise a FerretDB of its own with its data in ``data_dir``,
    stopped afterwards. What the tests and the benchmarks run against."""
    if os.environ.get("MONGODB_URI"):
        yield os.environ["MONGODB_URI"]
        return
    server = FerretDB(data_dir).start()
    try:
        yield server.uri
    finally:
        server.stop()
