"""``make run``: FerretDB (unless MONGODB_URI is set), demo data, the WeChat sandbox and the
backend, in the foreground, supervised; Ctrl-C stops them all.

Each child runs in a process group of its own, so whatever it starts (the backend's document
pool, multiprocessing's resource tracker) goes with it. A child that dies is cleaned up (the
rest of its group stopped) and started again after a back-off (1 s, doubling up to 30 s, back
to 1 s once it has run a minute), alone: the backend's death does not stop the sandbox (whose
orders live in memory) nor the database.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from wx_backend.config import Config
from wx_backend.embedded import ROOT, FerretDB, wait_for_port

FIRST_BACKOFF, MAX_BACKOFF, STABLE_AFTER = 1.0, 30.0, 60.0
STOP_GRACE = 10.0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def stop_group(pgid: int, grace: float = STOP_GRACE) -> None:
    """SIGTERM every process of the group, then SIGKILL what is left after ``grace`` seconds."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)


class Child:
    """One supervised process, the leader of its own process group."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], port: int):
        self.name, self.args, self.env, self.port = name, args, env, port
        self.proc: subprocess.Popen | None = None
        self.started_at = 0.0
        self.backoff = FIRST_BACKOFF
        self.restart_at: float | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([sys.executable, *self.args], env=self.env, cwd=ROOT, start_new_session=True)
        self.started_at = time.monotonic()
        self.restart_at = None
        try:
            wait_for_port(self.port, proc=self.proc)
        except RuntimeError as exc:  # restarted like a child that died
            print(f"{self.name} did not start ({exc})", flush=True)

    def check(self) -> None:
        """Restart the child if it died (after its back-off); called every half second."""
        now = time.monotonic()
        if self.restart_at is not None:
            if now >= self.restart_at:
                print(f"restarting {self.name}", flush=True)
                self.start()
            return
        if self.proc is None or self.proc.poll() is None:
            return
        code = self.proc.returncode
        stop_group(self.proc.pid)  # what it started (its document pool) goes with it
        if now - self.started_at >= STABLE_AFTER:
            self.backoff = FIRST_BACKOFF
        print(f"{self.name} exited ({code}); restarting in {self.backoff:.0f} s", flush=True)
        self.restart_at = now + self.backoff
        self.backoff = min(self.backoff * 2, MAX_BACKOFF)

    def stop(self) -> None:
        if self.proc is not None:
            stop_group(self.proc.pid)


def main() -> None:
    # `kill` (SIGTERM) stops everything as Ctrl-C does, instead of leaving the children running
    signal.signal(signal.SIGTERM, _interrupt)
    os.environ.setdefault("WX_ENV", "dev")
    env = dict(os.environ)
    database = None
    if not env.get("MONGODB_URI"):
        database = FerretDB(ROOT / "var" / "ferretdb", port=int(env.get("WX_FERRETDB_PORT", "27017")))
        print(f"starting FerretDB on 127.0.0.1:{database.port} (data in var/ferretdb)", flush=True)
        database.start()
        env["MONGODB_URI"] = database.uri
    config = Config.from_env(env)
    children = [
        Child("sandbox", ["-m", "wx_backend.sandbox"], env, config.sandbox_port),
        Child("backend", ["-m", "scripts.serve"], env, config.port),
    ]
    try:
        subprocess.run([sys.executable, "-m", "scripts.demo_data"], env=env, check=True, cwd=ROOT)
        for child in children:
            child.start()
        print(
            f"\n  backend  http://127.0.0.1:{config.port}  (try /healthz, /readyz)\n"
            f"  sandbox  http://127.0.0.1:{config.sandbox_port}/sandbox/\n"
            "  A process that dies is restarted. Ctrl-C stops everything.\n",
            flush=True,
        )
        while True:
            time.sleep(0.5)
            if database is not None and database.proc is not None and database.proc.poll() is not None:
                print("FerretDB exited; restarting it", flush=True)
                database.start()
            for child in children:
                child.check()
    except KeyboardInterrupt:
        pass
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):  # a second Ctrl-C must not cut the clean-up short
            signal.signal(sig, signal.SIG_IGN)
        for child in reversed(children):
            child.stop()
        if database:
            database.stop()


if __name__ == "__main__":
    main()
