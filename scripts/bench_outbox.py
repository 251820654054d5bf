"""Outbox delivery under faults: N queued messages, W worker processes, injected timeouts.

``python -m scripts.bench_outbox [--messages 500] [--workers 2]`` starts its own database
(FerretDB, or ``MONGODB_URI``), WeChat sandbox and backend on free ports, creates customers
who follow the official account, customers who only accepted subscribe messages and
customers who can be reached by neither, queues the messages (plus marketing-system
webhooks), injects timeouts and system errors, runs the workers as separate processes and
prints what happened: sent per channel, recorded undeliverable / failed, retried, and
duplicates (messages WeChat or the webhook receiver got more than once), which must be 0.
The test suite runs the same scenario at a smaller scale (tests/test_outbox.py).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import requests
from pymongo import AsyncMongoClient, MongoClient

from wx_backend.config import Config
from wx_backend.embedded import ROOT, database_uri, free_port, wait_for_port
from wx_backend.security import request_signature
from wx_backend.services.notifications import Notifications, load_message_templates
from wx_backend.services.outbox import FINAL, Outbox
from wx_backend.wechat import WeChat

MESSAGES = {
    "contract_ready": {"app_no": "20260226000123", "service_name": "企业新装", "contract_no": "HT2026000123"},
    "stage_changed": {"app_no": "20260226000124", "service_name": "个人新装", "stage": "勘查"},
    "bill_issued": {"account_no": "5263900001", "period": "2026-02", "amount_fen": 12345, "due_date": "2026-03-15"},
    "outage": {"region": "郏县城关", "start": "2026-03-01 08:00", "end": "2026-03-01 18:00", "reason": "线路检修"},
    "payment_received": {"account_no": "5263900001", "amount_fen": 10000, "paid_at": "2026-02-26 10:00"},
}


class WebhookReceiver:
    """The marketing system's webhook endpoint: checks each signature, counts each event id."""

    def __init__(self, secret: str, fail_first: int = 0):
        receiver = self
        self.secret = secret
        self.received: Counter = Counter()
        self.bad_signatures = 0
        self.fail_left = fail_first
        self.lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                expected = request_signature(
                    receiver.secret, "POST", self.path, self.headers["X-Timestamp"], self.headers["X-Nonce"], body
                )
                with receiver.lock:
                    if expected != self.headers.get("X-Signature"):
                        receiver.bad_signatures += 1
                        self.send_response(401)
                    elif receiver.fail_left > 0:
                        receiver.fail_left -= 1
                        self.send_response(503)  # the marketing system is briefly down
                    else:
                        receiver.received[self.headers["X-Event-Id"]] += 1
                        json.loads(body)
                        self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/wx-backend"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def login(api_url: str, sandbox_url: str, openid: str, unionid: str) -> None:
    code = requests.post(
        f"{sandbox_url}/sandbox/mp/login-code", json={"openid": openid, "unionid": unionid}, timeout=10
    ).json()["code"]
    resp = requests.post(f"{api_url}/api/v1/session", json={"code": code}, timeout=10)
    resp.raise_for_status()


def populate(
    env: dict[str, str], api_url: str, sandbox_url: str, messages: int, webhooks: int, run: str
) -> dict[str, Any]:
    """Create customers and queue ``messages`` notifications and ``webhooks`` webhooks."""
    users = max(messages // 5, 3)
    kinds = ["follower"] * (users * 6 // 10) + ["subscriber"] * (users * 2 // 10)
    kinds += ["unreachable"] * (users - len(kinds))
    config = Config.from_env(env)
    plan: dict[str, Any] = {"users": [], "messages": {}, "webhooks": []}
    for i, kind in enumerate(kinds):
        mp_openid, oa_openid, unionid = f"o_{run}_{i}", f"oa_{run}_{i}", f"u_{run}_{i}"
        login(api_url, sandbox_url, mp_openid, unionid)
        if kind == "follower":
            resp = requests.post(
                f"{sandbox_url}/sandbox/oa/follow", json={"openid": oa_openid, "unionid": unionid}, timeout=10
            ).json()
            assert resp["status"] == 200, resp
        plan["users"].append({"kind": kind, "mp_openid": mp_openid, "oa_openid": oa_openid})
    catalogue = load_message_templates(config.messages_file or None)
    for i in range(messages):  # wx.requestSubscribeMessage: one acceptance per message to come
        user_plan = plan["users"][i % len(kinds)]
        if user_plan["kind"] == "subscriber":
            template_id = catalogue[list(MESSAGES)[i % len(MESSAGES)]].subscribe.template_id
            requests.post(
                f"{sandbox_url}/sandbox/mp/subscribe-accept",
                json={"openid": user_plan["mp_openid"], "template_id": template_id},
                timeout=10,
            ).raise_for_status()

    async def queue() -> None:
        client = AsyncMongoClient(env["MONGODB_URI"], tz_aware=True)
        try:
            db = client[env["WX_DB_NAME"]]
            outbox = Outbox(db)
            notes = Notifications(db, outbox, WeChat(config, db), config)
            # the followers' links are made by the callback's user-info lookup: wait for them
            for _ in range(100):
                linked = await db.users.count_documents(
                    {"mp_openid": {"$regex": f"^o_{run}_"}, "oa_openid": {"$exists": True}}
                )
                if linked >= kinds.count("follower"):
                    break
                await asyncio.sleep(0.1)
            for i in range(messages):
                user_plan = plan["users"][i % len(kinds)]
                key = list(MESSAGES)[i % len(MESSAGES)]
                user = await db.users.find_one({"mp_openid": user_plan["mp_openid"]})
                dedupe = f"bench:{run}:{i}"
                assert await notes.notify_user(user["_id"], key, MESSAGES[key], None, dedupe)
                assert not await notes.notify_user(user["_id"], key, MESSAGES[key], None, dedupe), "queued twice"
                plan["messages"][dedupe] = user_plan
            for i in range(webhooks):
                key = f"bench:{run}:hook:{i}"
                assert await outbox.enqueue("webhook", key, {"event": "payment_credited", "body": {"n": i}})
                plan["webhooks"].append(key)
        finally:
            await client.close()

    asyncio.run(queue())
    return plan


def inject_faults(sandbox_url: str, messages: int) -> None:
    for endpoint, fault, count in [
        ("template_send", "timeout", max(messages // 50, 2)),
        ("template_send", "system_error", max(messages // 20, 3)),
        ("subscribe_send", "timeout", max(messages // 100, 1)),
        ("subscribe_send", "system_error", max(messages // 50, 2)),
    ]:
        requests.post(
            f"{sandbox_url}/sandbox/faults", json={"endpoint": endpoint, "fault": fault, "count": count}, timeout=10
        ).raise_for_status()


def start_workers(env: dict[str, str], count: int, logdir: Path) -> list[subprocess.Popen]:
    procs = []
    for n in range(count):
        log = open(logdir / f"worker-{n}.log", "ab")
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "wx_backend.workers"],
                env={**env, "WX_EMBEDDED_WORKERS": "0"},
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        )
        log.close()
    return procs


def wait_final(env: dict[str, str], run: str, timeout: float) -> bool:
    client = MongoClient(env["MONGODB_URI"], tz_aware=True)
    try:
        coll = client[env["WX_DB_NAME"]].outbox
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if coll.count_documents({"dedupe_key": {"$regex": f"^bench:{run}:"}, "status": {"$nin": list(FINAL)}}) == 0:
                return True
            time.sleep(1.0)
        return False
    finally:
        client.close()


def count(
    env: dict[str, str], sandbox_url: str, plan: dict[str, Any], run: str, receiver: WebhookReceiver | None
) -> dict[str, Any]:
    client = MongoClient(env["MONGODB_URI"], tz_aware=True)
    try:
        docs = list(client[env["WX_DB_NAME"]].outbox.find({"dedupe_key": {"$regex": f"^bench:{run}:"}}))
    finally:
        client.close()
    oa = requests.get(f"{sandbox_url}/sandbox/oa/messages", timeout=10).json()
    mp = requests.get(f"{sandbox_url}/sandbox/mp/messages", timeout=10).json()["messages"]
    by_id = {str(d["_id"]): d for d in docs}
    template_copies = Counter(m["client_msg_id"] for m in oa["messages"] if m.get("client_msg_id") in by_id)
    mp_per_user = Counter(m["touser"] for m in mp if m["touser"].startswith(f"o_{run}_"))
    sent_sub_per_user = Counter(d["touser"] for d in docs if d["status"] == "sent" and d.get("channel") == "subscribe")
    statuses = Counter(d["status"] for d in docs)
    channels = Counter(d.get("channel") for d in docs if d["status"] == "sent")
    duplicates = sum(n - 1 for n in template_copies.values() if n > 1) + oa["repeats"]
    duplicates += sum(max(0, mp_per_user[u] - sent_sub_per_user[u]) for u in mp_per_user)
    missing = [
        str(d["_id"])
        for d in docs
        if d["status"] == "sent" and d.get("channel") == "official_account" and template_copies[str(d["_id"])] != 1
    ]
    missing += [u for u, n in sent_sub_per_user.items() if mp_per_user[u] != n]
    wrongly_sent = [
        k
        for k, d in ((d["dedupe_key"], d) for d in docs)
        if k in plan["messages"] and plan["messages"][k]["kind"] == "unreachable" and d["status"] == "sent"
    ]
    hooks = receiver.received if receiver else Counter()
    if receiver:
        duplicates += sum(n - 1 for n in hooks.values() if n > 1)
    done = sorted(d["finished_at"] for d in docs if d.get("finished_at"))
    first = min(d["created_at"] for d in docs) if docs else None
    return {
        "seconds_to_90%_final": round((done[int(len(done) * 0.9) - 1] - first).total_seconds(), 1) if done else None,
        "queued": len(docs),
        "sent": statuses["sent"],
        "sent_template": channels["official_account"],
        "sent_subscribe": channels["subscribe"],
        "sent_webhook": channels["webhook"],
        "undeliverable": statuses["undeliverable"],
        "failed": statuses["failed"],
        "skipped": statuses["skipped"],
        "not_final": sum(statuses[s] for s in statuses if s not in FINAL),
        "retried": sum(1 for d in docs if d.get("tries", 0) > 1),
        "attempts": sum(len(d.get("attempts", [])) for d in docs),
        "duplicates": duplicates,
        "sent_but_not_received": len(missing),
        "unreachable_but_sent": len(wrongly_sent),
        "webhook_bad_signatures": receiver.bad_signatures if receiver else 0,
    }


def scenario(
    env: dict[str, str],
    api_url: str,
    sandbox_url: str,
    logdir: Path,
    messages: int,
    workers: int,
    webhooks: int,
    receiver: WebhookReceiver | None,
    timeout: float = 300.0,
) -> dict[str, Any]:
    """The whole run; the workers are stopped before it returns."""
    run = uuid.uuid4().hex[:6]
    plan = populate(env, api_url, sandbox_url, messages, webhooks, run)
    inject_faults(sandbox_url, messages)
    started = time.monotonic()
    procs = start_workers(env, workers, logdir)
    try:
        finished = wait_final(env, run, timeout)
        elapsed = time.monotonic() - started
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
    result = count(env, sandbox_url, plan, run, receiver)
    result.update(finished=finished, seconds=round(elapsed, 1), workers=workers)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=500)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--webhooks", type=int, default=20)
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for every message to be final")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-outbox-"))
    with database_uri(tmp / "db") as uri:
        run(args, tmp, uri)


def run(args: argparse.Namespace, tmp: Path, uri: str) -> None:
    sandbox_port, app_port = free_port(), free_port()
    receiver = WebhookReceiver("bench-internal-secret", fail_first=3)
    env = {k: v for k, v in os.environ.items() if not k.startswith("WX_")}
    env.update(
        {
            "WX_ENV": "test",
            "MONGODB_URI": uri,
            "WX_DB_NAME": f"bench_{uuid.uuid4().hex[:8]}",
            "WX_PORT": str(app_port),
            "WX_SANDBOX_PORT": str(sandbox_port),
            "WX_INTERNAL_SECRET": "bench-internal-secret",
            "WX_DATA_KEY": base64.b64encode(b"bench-data-key-0123456789abcdef!").decode(),
            "WX_WECHAT_API_BASE": f"http://127.0.0.1:{sandbox_port}",
            "WX_WECHAT_PAY_BASE": f"http://127.0.0.1:{sandbox_port}",
            "WX_WECHAT_TIMEOUT": "2",
            "WX_SANDBOX_TIMEOUT_DELAY": "4",
            "WX_MP_APPID": "wxmpbench0000001",
            "WX_MP_SECRET": "mp-bench-secret",
            "WX_OA_APPID": "wxoabench0000001",
            "WX_OA_SECRET": "oa-bench-secret",
            "WX_OA_TOKEN": "oabenchtoken",
            "WX_PAY_MCH_ID": "1900000109",
            "WX_PAY_API_KEY": "benchpaykey0123456789abcdefghijk",
            "WX_PUBLIC_BASE": f"http://127.0.0.1:{app_port}",
            "WX_SANDBOX_CALLBACK_BASE": f"http://127.0.0.1:{app_port}",
            "WX_EMBEDDED_WORKERS": "0",
            "WX_OUTBOX_RETRY_BASE": "0.5",
            "WX_WEBHOOK_URL": receiver.url,
            "WX_LOG_LEVEL": "WARNING",
            "PYTHONUNBUFFERED": "1",
        }
    )
    procs = []
    try:
        for args_, port in ((["-m", "wx_backend.sandbox"], sandbox_port), (["-m", "scripts.serve"], app_port)):
            with open(tmp / f"{port}.log", "ab") as log:
                procs.append(
                    subprocess.Popen(
                        [sys.executable, *args_],
                        env=env,
                        cwd=ROOT,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        stdin=subprocess.DEVNULL,
                    )
                )
            wait_for_port(port, proc=procs[-1])
        print(
            f"queuing {args.messages} messages and {args.webhooks} webhooks; {args.workers} worker processes",
            flush=True,
        )
        result = scenario(
            env,
            f"http://127.0.0.1:{app_port}",
            f"http://127.0.0.1:{sandbox_port}",
            tmp,
            args.messages,
            args.workers,
            args.webhooks,
            receiver,
            timeout=args.timeout,
        )
        for key, value in result.items():
            print(f"{key:>24}: {value}")
        ok = (
            result["finished"]
            and result["duplicates"] == 0
            and result["not_final"] == 0
            and result["sent_but_not_received"] == 0
            and result["unreachable_but_sent"] == 0
        )
        print("OK" if ok else "FAILED")
        sys.exit(0 if ok else 1)
    finally:
        receiver.close()
        for proc in procs:
            proc.terminate()
            proc.wait(10)


if __name__ == "__main__":
    main()
