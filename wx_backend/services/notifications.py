"""Customer notifications: the message templates, queuing, and the delivery channels.

A notification is queued in the outbox (``notify_user``) and sent by a worker
(``deliver``): a template message with a mini-program link to the user's official-account
openid while they follow; otherwise a mini-program subscribe message (WeChat refuses it
with 43101 unless the user accepted that template); otherwise it is recorded
``undeliverable``. What each message says, and through which templates, is data: the
message templates in ``templates/messages/catalogue.toml`` (or ``WX_MESSAGES_FILE``), not to
be confused with the catalog of business types (``services/catalog``).
"""

from __future__ import annotations

import logging
import random
import tomllib
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from bson import ObjectId
from pymongo.asynchronous.database import AsyncDatabase

from ..config import Config
from ..db import utcnow
from ..errors import ValidationFailed, WeChatUnavailable
from ..pages import page_url
from ..wechat import WeChat, WeChatAPIError
from ..wechat.account_faults import alert_line, is_account_fault
from .keywords import RULES, fit, keyword_type
from .outbox import Outbox

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_MESSAGES_FILE = ROOT / "templates" / "messages" / "catalogue.toml"
SHANGHAI = ZoneInfo("Asia/Shanghai")

# WeChat's answers that mean "this channel will never reach this user": try the next one
CHANNEL_FINAL = {40003, 43004, 43101}
# transient: try again later (-1 arrives as WeChatUnavailable)
TRANSIENT = {-1, 45011, 43108}  # 43108: concurrent sends to one user
QUOTA = 45009
CHANNEL_APPS = {
    "official_account": "official account (template messages)",
    "subscribe": "mini-program (subscribe messages)",
}


@dataclass(frozen=True)
class Template:
    template_id: str
    data: dict[str, str]


@dataclass(frozen=True)
class Message:
    key: str
    description: str
    fields: tuple[str, ...]
    page: str
    official_account: Template | None
    subscribe: Template | None


@dataclass
class MessageTemplates:
    messages: dict[str, Message] = field(default_factory=dict)

    def __getitem__(self, key: str) -> Message:
        return self.messages[key]

    def __contains__(self, key: str) -> bool:
        return key in self.messages


def load_message_templates(path: str | Path | None = None) -> MessageTemplates:
    """Read the message templates; a missing field or template is an error naming the message."""
    path = Path(path) if path else DEFAULT_MESSAGES_FILE
    with open(path, "rb") as fh:
        raw = tomllib.load(fh)
    book = MessageTemplates()
    for key, entry in raw.items():
        templates = {}
        for channel in ("official_account", "subscribe"):
            spec = entry.get(channel)
            if spec is None:
                templates[channel] = None
                continue
            if not spec.get("template_id") or not isinstance(spec.get("data"), dict):
                raise ValueError(f"{path}: [{key}.{channel}] needs template_id and data")
            unknown = [name for name in spec["data"] if keyword_type(name) not in RULES]
            if unknown:  # the name declares the type: thing2, character_string1, time3 ...
                raise ValueError(f"{path}: [{key}.{channel}] keywords of no WeChat type: {unknown}")
            templates[channel] = Template(spec["template_id"], dict(spec["data"]))
        if not any(templates.values()):
            raise ValueError(f"{path}: [{key}] has no official_account or subscribe template")
        book.messages[key] = Message(
            key=key,
            description=entry.get("description", ""),
            fields=tuple(entry.get("fields", ())),
            page=entry.get("page", ""),
            **templates,
        )
    return book


def _values(data: dict[str, Any]) -> dict[str, Any]:
    values = dict(data)
    for name, value in data.items():
        if name.endswith("_fen") and isinstance(value, int) and not isinstance(value, bool):
            sign = "-" if value < 0 else ""
            values[name[:-4] + "_yuan"] = f"{sign}{abs(value) // 100}.{abs(value) % 100:02d}"
    return values


def render(template: Template, data: dict[str, Any], channel: str) -> dict[str, str]:
    """The keyword values of ``template`` for ``data``, as WeChat accepts them by keyword type
    (``services/keywords.py``); ``ValueError`` if one cannot be (the channel is then skipped)."""
    values = _values(data)
    return {keyword: fit(keyword, fmt.format_map(values)) for keyword, fmt in template.data.items()}


def next_shanghai_midnight(now: datetime | None = None) -> datetime:
    """WeChat's daily quotas reset at midnight Beijing time."""
    local = (now or utcnow()).astimezone(SHANGHAI)
    return datetime.combine(local.date() + timedelta(days=1), time(0, 0), tzinfo=SHANGHAI).astimezone(UTC)


@dataclass
class Outcome:
    """What one delivery try came to; the worker turns it into the outbox update."""

    status: str  # sent | undeliverable | failed | skipped | retry
    attempts: list[dict[str, Any]] = field(default_factory=list)
    fields: dict[str, Any] = field(default_factory=dict)
    retry_at: datetime | None = None  # for status retry: when (None = the backoff schedule)
    count_try: bool = True  # a pause (45009) is no failed try


def attempt(channel: str, result: str, **extra: Any) -> dict[str, Any]:
    return {"at": utcnow(), "channel": channel, "result": result, **extra}


class Notifications:
    def __init__(self, db: AsyncDatabase, outbox: Outbox, wechat: WeChat, config: Config):
        self.db = db
        self.outbox = outbox
        self.wechat = wechat
        self.mp_appid = config.mp_appid
        self.public_base = config.public_base
        self.account_pause = config.outbox_account_pause
        self.templates = load_message_templates(config.messages_file or None)

    async def notify_user(
        self, user_id: ObjectId | str, message: str, data: dict[str, Any], page: str | None, dedupe_key: str
    ) -> bool:
        """Queue ``message`` (a key of the message templates) for a user; ``False`` if ``dedupe_key`` was queued before.

        ``data`` must hold the message's ``fields`` (see the templates file); ``page`` overrides the
        message's mini-program page. Call it right after the business change it reports,
        with a key naming that change, e.g. ``f"stage:{app_no}:{stage}"``.
        """
        if message not in self.templates:
            raise ValidationFailed(details=[{"field": "message", "message": f"未知的消息类型 {message}"}])
        entry = self.templates[message]
        missing = [name for name in entry.fields if data.get(name) in (None, "")]
        if missing:
            raise ValidationFailed(details=[{"field": f"data.{name}", "message": "缺少消息内容"} for name in missing])
        if not isinstance(user_id, ObjectId):
            user_id = ObjectId(user_id)
        return await self.outbox.enqueue(
            "notify",
            dedupe_key,
            {
                "user_id": user_id,
                "message": message,
                "data": data,
                "page": page,
            },
        )

    async def user_links(self, user_id: ObjectId) -> dict[str, Any] | None:
        """Where a user can be reached: openids, unionid, follow state, bound accounts."""
        user = await self.db.users.find_one({"_id": user_id})
        if user is None:
            return None
        follower = await self.db.oa_followers.find_one({"_id": user["oa_openid"]}) if user.get("oa_openid") else None
        accounts = [
            {
                "account_no": acc.get("account_no"),
                "role": next((b.get("role") for b in acc.get("bindings", []) if b.get("user_id") == user_id), None),
            }
            async for acc in self.db.accounts.find({"bindings.user_id": user_id}, {"account_no": 1, "bindings": 1})
        ]
        return {
            "user_id": str(user_id),
            "mp_openid": user.get("mp_openid"),
            "unionid": user.get("unionid"),
            "oa_openid": user.get("oa_openid"),
            "follows_official_account": bool(user.get("oa_openid") and not user.get("oa_unsubscribed")),
            "followed_at": follower.get("subscribed_at") if follower else None,
            "unfollowed_at": follower.get("unsubscribed_at") if follower else None,
            "accounts": accounts,
        }

    async def find_user(self, ref: str) -> ObjectId | None:
        """A user by id, mini-program openid, official-account openid or unionid."""
        query: list[dict[str, Any]] = [{"mp_openid": ref}, {"oa_openid": ref}, {"unionid": ref}]
        if ObjectId.is_valid(ref):
            query.insert(0, {"_id": ObjectId(ref)})
        user = await self.db.users.find_one({"$or": query}, {"_id": 1})
        return user["_id"] if user else None

    # -- sending (the worker) -----------------------------------------------------------
    async def deliver(self, doc: dict[str, Any]) -> Outcome:
        """One try at delivering an outbox ``notify`` message, channel by channel."""
        payload = doc["payload"]
        entry = self.templates.messages.get(payload.get("message"))
        if entry is None:
            return Outcome("failed", [attempt("none", "unknown_message")])
        user = await self.db.users.find_one({"_id": payload["user_id"]})
        if user is None:
            return Outcome("undeliverable", [attempt("none", "no_user")])
        data = payload.get("data") or {}
        try:
            page = payload.get("page") or entry.page.format_map(_values(data))
        except (KeyError, ValueError):
            page = ""
        done = set(doc.get("channels_done") or [])
        attempts: list[dict[str, Any]] = []
        channels = []
        if entry.official_account and "official_account" not in done:
            if user.get("oa_openid") and not user.get("oa_unsubscribed"):
                channels.append(("official_account", entry.official_account, user["oa_openid"]))
        if entry.subscribe and "subscribe" not in done and user.get("mp_openid"):
            channels.append(("subscribe", entry.subscribe, user["mp_openid"]))
        for channel, template, openid in channels:
            pause_key = f"{channel}:{template.template_id}"
            for key in (channel, pause_key):  # the whole channel (account fault), the template (quota)
                until = await self.outbox.paused_until(key)
                if until:
                    attempts.append(attempt(channel, "paused", until=until))
                    return Outcome(
                        "retry",
                        attempts,
                        {"channels_done": sorted(done), "paused_on": key},
                        retry_at=until,
                        count_try=False,
                    )
            uncertain = (doc.get("uncertain") or {}).get(channel)
            if uncertain:  # an earlier answer was lost: did WeChat send it? its receipt says so
                if channel == "official_account":
                    receipt = await self.outbox.unclaimed_receipt(openid, uncertain, doc["_id"])
                else:  # no second consent spent on a message that went out
                    receipt = await self.outbox.unclaimed_subscribe_receipt(
                        openid, template.template_id, uncertain, doc["_id"]
                    )
                if receipt:
                    attempts.append(attempt(channel, "receipt", msgid=receipt["_id"]))
                    return Outcome(
                        "sent",
                        attempts,
                        {
                            "channel": channel,
                            "template_id": template.template_id,
                            "msgid": receipt["_id"],
                            "touser": openid,
                            "channels_done": sorted(done),
                        },
                    )
            try:
                values = render(template, data, channel)
            except (KeyError, ValueError) as exc:
                attempts.append(attempt(channel, "bad_data", detail=str(exc)))
                done.add(channel)
                continue
            started = utcnow()
            try:
                if channel == "official_account":
                    msgid = await self.wechat.official_account.send_template(
                        openid,
                        template.template_id,
                        values,
                        miniprogram={"appid": self.mp_appid, "pagepath": page},
                        url=page_url(self.public_base, page),
                        client_msg_id=f"{doc['_id']}",
                    )
                    fields: dict[str, Any] = {
                        "channel": channel,
                        "template_id": template.template_id,
                        "msgid": msgid,
                        "touser": openid,
                    }
                else:
                    result = await self.wechat.miniprogram.send_subscribe(openid, template.template_id, values, page)
                    fields = {"channel": channel, "template_id": template.template_id, "touser": openid}
                    if result.get("msgid"):
                        fields["msgid"] = int(result["msgid"])
            except WeChatUnavailable as exc:
                attempts.append(attempt(channel, "unavailable", detail=_reason(exc)))
                fields = {"channels_done": sorted(done)}
                if not uncertain:  # WeChat may have sent it: the retry looks for its receipt first
                    fields[f"uncertain.{channel}"] = started
                return Outcome("retry", attempts, fields)
            except WeChatAPIError as exc:
                if exc.errcode in TRANSIENT:
                    attempts.append(attempt(channel, "retry", errcode=exc.errcode))
                    return Outcome("retry", attempts, {"channels_done": sorted(done)})
                if is_account_fault(exc.errcode):
                    return await self._account_fault(channel, exc.errcode, attempts, done)
                if exc.errcode == QUOTA:
                    until = next_shanghai_midnight()
                    await self.outbox.pause(pause_key, until)
                    log.warning("template %s over its daily quota; paused until %s", template.template_id, until)
                    attempts.append(attempt(channel, "quota", errcode=exc.errcode, until=until))
                    return Outcome("retry", attempts, {"channels_done": sorted(done)}, retry_at=until, count_try=False)
                attempts.append(attempt(channel, "refused", errcode=exc.errcode))
                done.add(channel)
                if channel == "official_account" and exc.errcode == 43004:
                    # WeChat says they do not follow: believe it for every later message
                    await self.db.users.update_one(
                        {"_id": user["_id"], "oa_openid": openid}, {"$set": {"oa_unsubscribed": True}}
                    )
                continue
            attempts.append(attempt(channel, "sent", **({"msgid": fields["msgid"]} if "msgid" in fields else {})))
            if await self.outbox.clear_pause(channel):
                log.warning("WECHAT ACCOUNT FAULT cleared: %s messages are sent again", channel)
            return Outcome("sent", attempts, {**fields, "channels_done": sorted(done)})
        if not attempts:
            attempts.append(attempt("none", "no_channel"))
        return Outcome("undeliverable", attempts, {"channels_done": sorted(done)})

    async def _account_fault(
        self, channel: str, errcode: int, attempts: list[dict[str, Any]], done: set[str]
    ) -> Outcome:
        """The app's WeChat account needs the operator: the channel waits, the message is kept."""
        until, strikes = await self.outbox.pause_channel(channel, errcode, self.account_pause)
        if strikes > 1:  # a probe after the pause: still broken, the alert stands
            log.info("%s still refused by WeChat (%s); paused until %s", channel, errcode, until)
        elif strikes == 1:
            log.error(
                alert_line(
                    CHANNEL_APPS[channel],
                    errcode,
                    f"{channel} messages paused until {until:%Y-%m-%d %H:%M:%S} UTC, then tried again; "
                    f"after fixing it resume at once: python -m scripts.messages resume {channel}",
                )
            )
        attempts.append(attempt(channel, "account_fault", errcode=errcode, until=until))
        return Outcome(
            "retry", attempts, {"channels_done": sorted(done), "paused_on": channel}, retry_at=until, count_try=False
        )


def _reason(exc: WeChatUnavailable) -> str:
    details = exc.details or {}
    return str(details.get("reason") or details.get("errcode") or details.get("status") or "unavailable")


def backoff(tries: int, base: float) -> timedelta:
    """Delay before try ``tries + 1``: ``base * 2**(tries-1)``, at most 15 minutes, ±20 % jitter."""
    delay = min(base * (2 ** max(tries - 1, 0)), 900.0)
    return timedelta(seconds=delay * random.uniform(0.8, 1.2))  # noqa: S311 - jitter, not security
