"""Run N backend processes on consecutive ports plus the background workers, and keep them up.

    python -m scripts.cluster --processes 4 --base-port 8000

starts ``python -m scripts.serve --port P`` for P = 8000 .. 8003 (with WX_EMBEDDED_WORKERS=0:
the workers run once, in their own process) and ``python -m wx_backend.workers`` when that module
exists. A process that exits is started again after a pause that doubles from 0.5 s up to 30 s
(back to 0.5 s once it has stayed up a minute). SIGTERM or SIGINT is passed to every process;
the command returns when all have stopped (SIGKILL after --stop-timeout seconds).

nginx.conf's upstream lists 127.0.0.1:8000..8003. docs/deploy.md shows the systemd units that do
the same job one unit per port, which allows rolling restarts.
"""

from __future__ import annotations

import argparse
import ctypes
import importlib.util
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

from wx_backend import logs
from wx_backend.embedded import ROOT

log = logging.getLogger("cluster")

BACKOFF_FIRST = 0.5
BACKOFF_MAX = 30.0
STABLE_AFTER = 60.0  # seconds up after which a process counts as healthy again


def _die_with_parent() -> None:
    # If the cluster itself is killed with SIGKILL, the children get SIGTERM instead of lingering.
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


@dataclass
class Child:
    name: str
    args: list[str]
    env: dict[str, str]
    proc: subprocess.Popen | None = None
    started_at: float = 0.0
    backoff: float = BACKOFF_FIRST
    restart_at: float | None = None
    restarts: int = field(default=0)

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, *self.args],
            env=self.env,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
        self.started_at = time.monotonic()
        self.restart_at = None
        log.info("started %s pid=%d", self.name, self.proc.pid)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def children(processes: int, base_port: int, environ: dict[str, str]) -> list[Child]:
    """The processes of the cluster: web processes on consecutive ports, then the workers."""
    web_env = {**environ, "WX_EMBEDDED_WORKERS": "0"}
    out = [
        Child(f"serve:{port}", ["-m", "scripts.serve", "--port", str(port)], {**web_env, "WX_PORT": str(port)})
        for port in range(base_port, base_port + processes)
    ]
    if importlib.util.find_spec("wx_backend.workers") is not None:
        out.append(Child("workers", ["-m", "wx_backend.workers"], dict(environ)))
    if importlib.util.find_spec("wx_backend.payment_followup") is not None:
        out.append(Child("payment-followup", ["-m", "wx_backend.payment_followup"], dict(environ)))
    else:
        log.info("no wx_backend.workers module: no worker process")
    return out


def supervise(members: list[Child], stop_timeout: float) -> int:
    stopping = False

    def on_signal(signum: int, _frame) -> None:
        nonlocal stopping
        if not stopping:
            log.info("%s: stopping %d processes", signal.Signals(signum).name, len(members))
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    for member in members:
        member.start()
    while not stopping:
        now = time.monotonic()
        for member in members:
            if member.running():
                if now - member.started_at > STABLE_AFTER:
                    member.backoff = BACKOFF_FIRST
                continue
            if member.restart_at is None:
                code = member.proc.returncode if member.proc else None
                member.restart_at = now + member.backoff
                log.warning("%s exited (%s); restarting in %.1f s", member.name, code, member.backoff)
                member.backoff = min(member.backoff * 2, BACKOFF_MAX)
            elif now >= member.restart_at:
                member.restarts += 1
                member.start()
        time.sleep(0.1)
    return _stop_all(members, stop_timeout)


def _stop_all(members: list[Child], timeout: float) -> int:
    for member in members:
        if member.running():
            member.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for member in members:
        if member.proc is None:
            continue
        try:
            member.proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop within %.0f s; killing it", member.name, timeout)
            member.proc.kill()
            member.proc.wait()
    log.info("all processes stopped")
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", type=int, default=4, help="number of web processes (default 4)")
    parser.add_argument("--base-port", type=int, default=8000, help="port of the first one (default 8000)")
    parser.add_argument("--stop-timeout", type=float, default=20.0, help="seconds to wait for a clean stop")
    args = parser.parse_args()
    if args.processes < 1:
        parser.error("--processes must be at least 1")
    logs.setup(os.environ.get("WX_LOG_LEVEL", "INFO"))
    sys.exit(supervise(children(args.processes, args.base_port, dict(os.environ)), args.stop_timeout))


if __name__ == "__main__":
    main()
