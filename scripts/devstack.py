"""``make run``: FerretDB (unless MONGODB_URI is set), demo data, the WeChat sandbox and the
backend, in the foreground; Ctrl-C stops them all."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from wx_backend.config import Config
from wx_backend.embedded import ROOT, FerretDB, wait_for_port


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


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
    children: list[subprocess.Popen] = []
    try:
        subprocess.run([sys.executable, "-m", "scripts.demo_data"], env=env, check=True, cwd=ROOT)
        children.append(subprocess.Popen([sys.executable, "-m", "wx_backend.sandbox"], env=env, cwd=ROOT))
        wait_for_port(config.sandbox_port, proc=children[-1])
        children.append(subprocess.Popen([sys.executable, "-m", "scripts.serve"], env=env, cwd=ROOT))
        wait_for_port(config.port, proc=children[-1])
        print(f"\n  backend  http://127.0.0.1:{config.port}  (try /healthz, /readyz)\n"
              f"  sandbox  http://127.0.0.1:{config.sandbox_port}/sandbox/\n"
              "  Ctrl-C stops everything.\n", flush=True)
        while all(child.poll() is None for child in children):
            time.sleep(0.5)
        print("a process exited; stopping", flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):  # a second Ctrl-C must not cut the clean-up short
            signal.signal(sig, signal.SIG_IGN)
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in children:
            try:
                child.wait(10)
            except subprocess.TimeoutExpired:
                child.kill()
        if database:
            database.stop()


if __name__ == "__main__":
    main()
