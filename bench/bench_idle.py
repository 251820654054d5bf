"""CPU that ``make run`` (FerretDB, demo data, sandbox, backend with its embedded workers) uses
while nobody calls it.

    python bench/bench_idle.py [--seconds 60] [--settle 15]

Starts ``scripts/devstack.py`` (what ``make run`` runs) in a session of its own on free ports,
waits until the backend answers and ``--settle`` seconds more (demo data, indexes), then adds
up the user and system CPU time of every process of that session over ``--seconds``. Prints
CPU seconds and the share of one core, per process and in total.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests
from _stack import header

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from wx_backend.embedded import free_port  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def session_cpu(sid: int) -> dict[str, float]:
    """CPU seconds (user + system) of each live process in session ``sid``, by pid and command."""
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[3]) != sid:  # field 6 of stat: the session id
            continue
        out[f"{entry.name} {cmd[:70]}"] = (int(fields[11]) + int(fields[12])) / TICK
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--settle", type=float, default=15.0)
    args = parser.parse_args()
    header("idle CPU of make run", args, "bench_idle.py")
    port = free_port()
    env = {
        **os.environ,
        "WX_ENV": "dev",
        "WX_PORT": str(port),
        "WX_SANDBOX_PORT": str(free_port()),
        "WX_FERRETDB_PORT": str(free_port()),
        "WX_PUBLIC_BASE": f"http://127.0.0.1:{port}",
        "WX_SANDBOX_CALLBACK_BASE": f"http://127.0.0.1:{port}",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "scripts.devstack"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                if requests.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit("make run did not come up")
            time.sleep(0.5)
        time.sleep(args.settle)
        before = session_cpu(proc.pid)
        time.sleep(args.seconds)
        after = session_cpu(proc.pid)
        total = 0.0
        for key, cpu in sorted(after.items()):
            used = cpu - before.get(key, 0.0)
            total += used
            print(f"  {used:7.2f} s  {100 * used / args.seconds:5.1f} %  {key}")
        print(f"idle CPU over {args.seconds:.0f} s: {total:.2f} s = {100 * total / args.seconds:.1f} % of one core")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(60)


if __name__ == "__main__":
    main()
