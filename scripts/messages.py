"""Operate the outbox: ``python -m scripts.messages COMMAND``.

list [--status undeliverable,failed] [--limit N]   messages that did not arrive, newest first, with their tries
resend ID | --all [--status ...]                  queue again (one message, or every one listed)
user REF                                          a user's links: openids, unionid, follow state,
                                                  bound accounts (REF = user id, openid or unionid)
pauses                                            channels and templates paused now, and why
resume official_account|subscribe|--all           the WeChat account is fixed: lift the channel's
                                                  pause and send its waiting messages now
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from bson import ObjectId

from wx_backend.config import Config, ConfigError
from wx_backend.services.notifications import SHANGHAI
from wx_backend.services.registry import Services

CHANNELS = ("official_account", "subscribe")


def _time(value) -> str:
    return value.astimezone(SHANGHAI).strftime("%Y-%m-%d %H:%M:%S") if value else "-"


async def run(args: argparse.Namespace) -> int:
    try:
        config = Config.from_env()
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    services = Services.connect(config, fail_fast=False)
    try:
        outbox = services.outbox
        statuses = tuple(s.strip() for s in args.status.split(",") if s.strip()) if hasattr(args, "status") else ()
        if args.command == "list":
            docs = await outbox.find(statuses, args.limit)
            for doc in docs:
                last = doc["attempts"][-1] if doc.get("attempts") else {}
                print(
                    f"{doc['_id']}  {doc['status']:<13} {doc['kind']:<8} {doc['dedupe_key']}  "
                    f"tries={doc.get('tries', 0)}  queued={_time(doc.get('created_at'))}  "
                    f"last={last.get('channel', '-')}:{last.get('result', '-')}"
                    f"{'/' + str(last['errcode']) if last.get('errcode') else ''}"
                )
            print(f"{len(docs)} message(s) in {', '.join(statuses)}")
        elif args.command == "resend":
            if not args.all and not (args.id and ObjectId.is_valid(args.id)):
                print("give a message id or --all", file=sys.stderr)
                return 2
            count = await outbox.requeue(None if args.all else ObjectId(args.id), statuses)
            print(f"queued again: {count}")
            return 0 if count else 1
        elif args.command == "pauses":
            for pause in await outbox.pauses():
                print(
                    f"{pause['_id']}  until={_time(pause['until'])}  errcode={pause.get('errcode', 45009)}  "
                    f"since={_time(pause.get('since') or pause.get('at'))}"
                )
        elif args.command == "resume":
            channels = CHANNELS if args.all else tuple(c for c in (args.channel,) if c in CHANNELS)
            if not channels:
                print(f"give a channel ({' or '.join(CHANNELS)}) or --all", file=sys.stderr)
                return 2
            print(f"resumed {', '.join(channels)}: {await outbox.resume(channels)} message(s) sent now")
        elif args.command == "user":
            notes = services.notifications
            user_id = await notes.find_user(args.ref)
            if user_id is None:
                print("no such user", file=sys.stderr)
                return 1
            links = await notes.user_links(user_id)
            print(json.dumps(links, ensure_ascii=False, indent=2, default=_time))
        return 0
    finally:
        await services.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p_list = sub.add_parser("list", help="undeliverable and failed messages")
    p_list.add_argument("--status", default="undeliverable,failed")
    p_list.add_argument("--limit", type=int, default=100)
    p_resend = sub.add_parser("resend", help="queue messages again")
    p_resend.add_argument("id", nargs="?")
    p_resend.add_argument("--all", action="store_true")
    p_resend.add_argument("--status", default="undeliverable,failed")
    sub.add_parser("pauses", help="paused channels and templates")
    p_resume = sub.add_parser("resume", help="lift an account-fault pause once the account is fixed")
    p_resume.add_argument("channel", nargs="?")
    p_resume.add_argument("--all", action="store_true")
    p_user = sub.add_parser("user", help="a user's WeChat links and bound accounts")
    p_user.add_argument("ref")
    sys.exit(asyncio.run(run(parser.parse_args())))


if __name__ == "__main__":
    main()
