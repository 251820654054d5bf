"""``make run`` (scripts/devstack.py) supervises its children: a backend killed with SIGKILL is
restarted on its own, the sandbox (whose orders live in memory) keeps running, the dead
backend's document pool goes with it, and stopping the stack leaves no process behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import requests
from conftest import base_env
from waits import wait_until

from wx_backend.embedded import ROOT, free_port


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isascii() or not entry.name.isdecimal():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def descendants(pid: int) -> set[int]:
    tree, found, todo = _children(), set(), [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def cmdline(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def the_one(parent: int, marker: str) -> int | None:
    """The living descendant of ``parent`` started as ``python -m {marker}`` (not its pool's workers)."""
    pids = [p for p in descendants(parent) if marker in cmdline(p) and "multiprocessing" not in cmdline(p) and alive(p)]
    return min(pids) if pids else None


@pytest.fixture
def devstack(tmp_path, mongodb_uri):
    app_port, sandbox_port = free_port(), free_port()
    env = base_env(f"t_dev_{uuid.uuid4().hex[:8]}", mongodb_uri, sandbox_port, app_port)
    env.update({"WX_ENV": "dev", "WX_DOCUMENT_WORKERS": "2"})
    log = open(tmp_path / "devstack.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "scripts.devstack"],
        env=env,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        yield proc, f"http://127.0.0.1:{app_port}", f"http://127.0.0.1:{sandbox_port}"
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()


def _up(url: str) -> bool:
    try:
        return requests.get(url + "/healthz", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def _start_document_pool(api: str, sandbox: str) -> None:
    """Any request that renders or checks a PDF starts the backend's document pool."""
    code = requests.post(
        sandbox + "/sandbox/mp/login-code", json={"openid": f"o_{uuid.uuid4().hex[:16]}"}, timeout=10
    ).json()["code"]
    token = requests.post(api + "/api/v1/session", json={"code": code}, timeout=10).json()["token"]
    resp = requests.post(
        api + "/api/v1/contracts/verify",
        data=b"%PDF-1.4\n%%EOF\n",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/pdf"},
        timeout=60,
    )
    assert resp.status_code < 500, resp.text


def test_dead_backend_is_restarted_alone_and_leaves_no_orphans(devstack):
    proc, api, sandbox = devstack
    wait_until(lambda: _up(api), 120, what="the backend")
    backend = wait_until(lambda: the_one(proc.pid, "scripts.serve"), 10, what="the backend process")
    sandbox_pid = wait_until(lambda: the_one(proc.pid, "wx_backend.sandbox"), 10, what="the sandbox process")
    _start_document_pool(api, sandbox)
    pool = wait_until(lambda: {p for p in descendants(backend) if alive(p)}, 30, what="the document pool")
    assert pool, "the document pool started"

    os.kill(backend, signal.SIGKILL)
    wait_until(lambda: not any(alive(p) for p in pool | {backend}), 30, what="the dead backend's pool to stop")
    new_backend = wait_until(
        lambda: (p := the_one(proc.pid, "scripts.serve")) and p != backend and p, 60, what="a new backend"
    )
    wait_until(lambda: _up(api), 60, what="the restarted backend")
    assert proc.poll() is None, "the supervisor keeps running"
    assert alive(sandbox_pid) and the_one(proc.pid, "wx_backend.sandbox") == sandbox_pid, (
        "the sandbox was not restarted"
    )
    orphans = [p for p in pool if alive(p)]
    assert not orphans, [cmdline(p) for p in orphans]

    everything = descendants(proc.pid) | {new_backend, sandbox_pid}
    proc.send_signal(signal.SIGTERM)
    proc.wait(60)
    wait_until(lambda: not any(alive(p) for p in everything), 30, what="every child to stop")
