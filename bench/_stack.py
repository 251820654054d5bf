"""What the benchmark scripts share: the test suite's servers, a bounded load generator, figures.

The servers are started exactly as the test suite starts them (``tests/conftest.py``: ``Stack``,
``Process``, ``base_env``), so a benchmark measures the same processes the tests check:
FerretDB of its own (or ``MONGODB_URI``), the WeChat sandbox and the backend, each a child
process on a free 127.0.0.1 port. The comparison servers ("bare" handlers) are ``bench/_bare.py``
started the same way.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for _path in (ROOT, ROOT / "tests"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from conftest import Process, Stack  # noqa: E402
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest  # noqa: E402

from wx_backend.embedded import database_uri, free_port  # noqa: E402

# Background workers (payment follow-up, outbox) run in their own processes in production;
# keeping them out of the measured web process keeps their polling out of its figures.
BENCH_ENV = {"WX_EMBEDDED_WORKERS": "0"}


def header(title: str, args, script: str) -> None:
    """The machine's core count and the exact command that reproduces the figures."""
    opts = " ".join(f"--{k.replace('_', '-')} {shlex.quote(str(v))}" for k, v in vars(args).items())
    print(f"== {title}")
    print(f"cores: {os.cpu_count()}   load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"command: python bench/{script} {opts}".rstrip())
    sys.stdout.flush()


@contextmanager
def running_stack(prefix: str, extra_env: dict[str, str] | None = None) -> Iterator[Stack]:
    """Database (``MONGODB_URI`` or a FerretDB of its own), sandbox and backend; all stopped after."""
    workdir = Path(tempfile.mkdtemp(prefix=f"bench-{prefix}-"))
    try:
        with database_uri(workdir / "ferretdb") as uri:
            (workdir / "stack").mkdir()
            stack = Stack(workdir / "stack", uri, extra_env={**BENCH_ENV, **(extra_env or {})})
            try:
                stack.start()
                yield stack
            finally:
                stack.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def start_bare(stack: Stack, mode: str, *extra: str) -> Process:
    """A comparison server from ``bench/_bare.py`` on a free port, with the stack's settings."""
    port = free_port()
    return Process(
        [str(ROOT / "bench" / "_bare.py"), mode, str(port), *extra], stack.env, port, stack.workdir / f"bare-{mode}.log"
    ).start()


def peak_rss_kib(pid: int) -> tuple[int, int]:
    """``(VmHWM, VmRSS)`` of a process in KiB: its resident-memory high-water mark and current size."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            fields[key] = int(value.split()[0])
    return fields["VmHWM"], fields["VmRSS"]


# -- load -------------------------------------------------------------------------------


@dataclass
class LoadResult:
    label: str
    done: int  # answered with the expected status
    failed: int
    elapsed: float
    latencies: list[float]  # seconds, of the successful requests
    first_error: str = ""

    @property
    def throughput(self) -> float:
        return self.done / self.elapsed if self.elapsed else 0.0

    def pct(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    @property
    def median(self) -> float:
        return statistics.median(self.latencies) if self.latencies else float("nan")

    def row(self) -> str:
        return (
            f"{self.label:<26} {self.done:6d} ok {self.failed:4d} failed {self.elapsed:7.2f} s "
            f"{self.throughput:8.1f} req/s  median {self.median * 1000:7.1f} ms  "
            f"p99 {self.pct(0.99) * 1000:7.1f} ms"
        )


async def _load(
    label: str,
    make_request: Callable[[int], HTTPRequest],
    expect: int,
    requests: int,
    concurrency: int,
    duration: float,
) -> LoadResult:
    client = AsyncHTTPClient(force_instance=True, max_clients=concurrency)
    issued = 0
    done = failed = 0
    latencies: list[float] = []
    first_error = ""
    deadline = time.monotonic() + duration

    async def worker() -> None:
        nonlocal issued, done, failed, first_error
        while issued < requests and time.monotonic() < deadline:
            n = issued
            issued += 1
            t0 = time.perf_counter()
            try:
                resp = await client.fetch(make_request(n), raise_error=False)
                status, error = resp.code, (resp.body or b"")[:200].decode(errors="replace")
            except (HTTPClientError, OSError) as exc:
                status, error = 0, repr(exc)
            if status == expect:
                done += 1
                latencies.append(time.perf_counter() - t0)
            else:
                failed += 1
                first_error = first_error or f"HTTP {status}: {error}"

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - t0
    client.close()
    return LoadResult(label, done, failed, elapsed, latencies, first_error)


async def _repeat(
    label: str, op: Callable[[], Awaitable[object]], requests: int, concurrency: int, duration: float
) -> LoadResult:
    issued = 0
    latencies: list[float] = []
    deadline = time.monotonic() + duration

    async def worker() -> None:
        nonlocal issued
        while issued < requests and time.monotonic() < deadline:
            issued += 1
            t0 = time.perf_counter()
            await op()
            latencies.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return LoadResult(label, len(latencies), 0, time.perf_counter() - t0, latencies)


def run_repeat(
    label: str,
    make_op: Callable[[], Callable[[], Awaitable[object]]],
    *,
    requests: int,
    concurrency: int,
    duration: float,
) -> LoadResult:
    """Like ``run_load`` for an awaitable operation (``make_op`` is called inside the event loop)."""

    async def go() -> LoadResult:
        return await _repeat(label, make_op(), requests, concurrency, duration)

    result = asyncio.run(go())
    print(result.row())
    sys.stdout.flush()
    return result


def run_load(
    label: str,
    make_request: Callable[[int], HTTPRequest],
    *,
    expect: int = 200,
    requests: int,
    concurrency: int,
    duration: float,
) -> LoadResult:
    """``concurrency`` clients send requests back to back until ``requests`` were sent or
    ``duration`` seconds passed (requests in flight then finish and count)."""
    result = asyncio.run(_load(label, make_request, expect, requests, concurrency, duration))
    print(result.row())
    if result.failed:
        print(f"   first failure: {result.first_error}")
    sys.stdout.flush()
    return result


def ratio_lines(ours: LoadResult, base: LoadResult, base_name: str) -> None:
    def div(a: float, b: float) -> str:
        return f"{a / b:.2f}" if b else "n/a"

    print(
        f"ratio ours/{base_name}: throughput {div(ours.throughput, base.throughput)}   "
        f"median latency {div(ours.median, base.median)}   p99 latency {div(ours.pct(0.99), base.pct(0.99))}"
    )
