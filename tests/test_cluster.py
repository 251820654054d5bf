"""``python -m scripts.cluster``: N app processes on consecutive ports (plus the workers), restarted
when they die, all stopped by one SIGTERM."""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import socket
import subprocess
import sys

import requests
from waits import wait_until

from wx_backend.embedded import ROOT, free_port, wait_for_port


def consecutive_free_ports(count: int) -> int:
    for _ in range(50):
        base = free_port()
        try:
            for port in range(base, base + count):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
    raise RuntimeError("no consecutive free ports")


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def started(log_path, name: str) -> list[int]:
    return [int(pid) for pid in re.findall(rf"started {re.escape(name)} pid=(\d+)", log_path.read_text())]


def test_cluster_runs_restarts_and_stops(stack, tmp_path):
    base = consecutive_free_ports(2)
    log_path = tmp_path / "cluster.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "scripts.cluster", "--processes", "2", "--base-port", str(base)],
            env=stack.env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        for port in (base, base + 1):
            wait_for_port(port, proc=proc)
            assert requests.get(f"http://127.0.0.1:{port}/healthz", timeout=10).json() == {"status": "ok"}
        first, second = started(log_path, f"serve:{base}"), started(log_path, f"serve:{base + 1}")
        assert len(first) == 1 and len(second) == 1
        has_workers = importlib.util.find_spec("wx_backend.workers") is not None
        assert wait_until(lambda: len(started(log_path, "workers")) == int(has_workers), 5)

        # a process that dies comes back on its port
        os.kill(second[0], signal.SIGKILL)
        assert wait_until(lambda: len(started(log_path, f"serve:{base + 1}")) == 2)
        wait_for_port(base + 1, proc=proc)
        assert requests.get(f"http://127.0.0.1:{base + 1}/healthz", timeout=10).status_code == 200
        # web processes leave the background work to the worker process
        with open(f"/proc/{first[0]}/environ", "rb") as f:
            environ = f.read().split(b"\0")
        assert b"WX_EMBEDDED_WORKERS=0" in environ and stack.env["WX_EMBEDDED_WORKERS"] != "0"
        assert f"WX_PORT={base}".encode() in environ

        children = [
            pid for name in (f"serve:{base}", f"serve:{base + 1}", "workers") for pid in started(log_path, name)
        ]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        assert [pid for pid in children if alive(pid)] == []
        for port in (base, base + 1):
            with socket.socket() as s:
                assert s.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still open"
        assert "all processes stopped" in log_path.read_text()
        assert "Traceback" not in log_path.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
