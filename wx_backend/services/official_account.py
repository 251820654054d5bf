"""The official account's server callback: URL check, follow/unfollow, receipts, replies.

WeChat waits 5 s for an answer and then retries, so the answer never waits on slow work:
the user-info lookup that links a new follower to their mini-program user by unionid gets a
short budget and finishes in the background if WeChat is slow. Every push is verified
(signature, and in safe mode msg_signature and the appid inside), parsed without DTDs or
entities, and deduplicated (MsgId, or FromUserName + CreateTime + Event) before anything
is stored.

Follow state lives in ``oa_followers`` (one document per official-account openid, linked
or not) and is mirrored on the user (``oa_openid``, ``oa_unsubscribed``) when one with the
same unionid exists; ``UserService.login`` links a follower who logs in later.
"""

from __future__ import annotations

import asyncio
import logging
import re
import tomllib
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any

from pymongo import ASCENDING, IndexModel
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError
from wechatpy import parse_message
from wechatpy.replies import TextReply

from ..config import Config
from ..db import utcnow
from ..errors import AppError, BadRequest, Forbidden, WeChatUnavailable
from ..wechat import WeChat, WeChatAPIError
from ..wechat.account_faults import alert_line, is_account_fault
from ..wechat.callback import CallbackCrypto, CallbackRejected
from .outbox import Outbox

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
REPLIES = ROOT / "templates" / "messages" / "oa_replies.toml"
INLINE_BUDGET = 2.5  # seconds of user-info lookup inside the 5 s WeChat allows
LINK_RETRIES = 3
_MP_LINK = re.compile(r"\{mp_link:([^|}]+)\|([^}]+)\}")

INDEXES = {
    "oa_followers": [IndexModel([("unionid", ASCENDING)])],
    "oa_events": [IndexModel([("received_at", ASCENDING)])],
}


class CallbackForbidden(Forbidden):
    code = "invalid_signature"
    message = "签名校验失败"


class CallbackMalformed(BadRequest):
    code = "invalid_xml"
    message = "消息格式有误"


@dataclass
class CallbackReply:
    body: str
    content_type: str = "application/xml; charset=UTF-8"


def mp_links(text: str, mp_appid: str) -> str:
    return _MP_LINK.sub(
        lambda m: (
            f'<a data-miniprogram-appid="{escape(mp_appid)}" data-miniprogram-path="{escape(m[1])}" '
            f'href="https://mp.weixin.qq.com">{escape(m[2])}</a>'
        ),
        text,
    )


class OfficialAccountService:
    def __init__(self, db: AsyncDatabase, wechat: WeChat, outbox: Outbox, config: Config):
        self.db = db
        self.wechat = wechat
        self.outbox = outbox
        self.crypto = CallbackCrypto(config.oa_token, config.oa_aes_key, config.oa_appid)
        self.mp_appid = config.mp_appid
        with open(REPLIES, "rb") as fh:
            self.replies = tomllib.load(fh)
        self._background: set[asyncio.Task] = set()

    # -- the two HTTP verbs ---------------------------------------------------------------
    def verify_url(self, query: dict[str, str]) -> str:
        """The GET handshake: ``echostr`` back when the signature is right."""
        try:
            self.crypto.check(query.get("signature", ""), query.get("timestamp", ""), query.get("nonce", ""))
        except CallbackRejected as exc:
            raise CallbackForbidden() from exc
        return query.get("echostr", "")

    async def handle(self, query: dict[str, str], body: bytes) -> CallbackReply:
        """Verify, record once and answer one push. Raises 403/400 before storing anything."""
        try:
            fields, xml = self.crypto.open(body, query)
            message = parse_message(xml)  # safe: the XML passed the hardened parser above
        except CallbackRejected as exc:
            if exc.reason == "signature":
                raise CallbackForbidden() from exc
            raise CallbackMalformed(details={"reason": exc.detail}) from exc
        except (KeyError, ValueError, TypeError, AttributeError) as exc:
            raise CallbackMalformed(details={"reason": "fields"}) from exc
        if not fields.get("FromUserName") or not fields.get("MsgType"):
            raise CallbackMalformed(details={"reason": "fields"})
        key = _push_key(fields)
        if await self._first_time(key, fields):
            reply = await self._dispatch(message, fields)
            if reply is not None:  # kept for WeChat's retry of this push, should our answer be late
                await self.db.oa_events.update_one({"_id": key}, {"$set": {"reply": reply}})
        else:  # WeChat's retry (it heard no answer in 5 s): the same reply, nothing done twice
            seen = await self.db.oa_events.find_one({"_id": key}, {"reply": 1})
            reply = (seen or {}).get("reply")
        if reply is None:
            return CallbackReply("success", "text/plain; charset=UTF-8")
        return CallbackReply(self.crypto.seal(reply, query.get("nonce") or None))

    async def _first_time(self, key: str, fields: dict[str, str]) -> bool:
        try:
            await self.db.oa_events.insert_one(
                {
                    "_id": key,
                    "openid": fields["FromUserName"],
                    "type": fields.get("MsgType"),
                    "event": fields.get("Event"),
                    "received_at": utcnow(),
                }
            )
        except DuplicateKeyError:
            return False
        return True

    async def _dispatch(self, message: Any, fields: dict[str, str]) -> str | None:
        openid = fields["FromUserName"]
        created = _int(fields.get("CreateTime"))
        if message.type == "text":
            return self._text(message, self.replies["text"])
        if message.type != "event":
            return None
        event = (fields.get("Event") or "").lower()
        if event in ("subscribe", "subscribe_scan", "scan"):
            await self.followed(openid, created)
            return self._text(message, self.replies["welcome"]) if event != "scan" else None
        if event == "unsubscribe":
            await self.unfollowed(openid, created)
            return None
        if event == "templatesendjobfinish":
            msgid = _int(fields.get("MsgID"))
            if msgid:
                await self.outbox.record_receipt(msgid, fields.get("Status", ""), openid)
            return None
        if event == "click":
            text = self.replies.get("menu", {}).get(fields.get("EventKey", ""))
            return self._text(message, text) if text else None
        return None

    def _text(self, message: Any, content: str) -> str:
        return TextReply(message=message, content=mp_links(content, self.mp_appid)).render()

    # -- follow state ---------------------------------------------------------------------
    async def followed(self, openid: str, created: int) -> None:
        """A follow (or a scan by a follower): record it, then link to the user by unionid."""
        now = utcnow()
        result = await self.db.oa_followers.update_one(
            {"_id": openid, "$or": [{"event_time": {"$lte": created}}, {"event_time": None}]},
            {"$set": {"subscribed": True, "subscribed_at": now, "event_time": created, "updated_at": now}},
        )
        if result.matched_count == 0:
            try:
                await self.db.oa_followers.insert_one(
                    {"_id": openid, "subscribed": True, "subscribed_at": now, "event_time": created, "updated_at": now}
                )
            except DuplicateKeyError:
                return  # a later event already decided this follower's state
        await self.db.users.update_many({"oa_openid": openid}, {"$set": {"oa_unsubscribed": False}})
        task = asyncio.create_task(self._link(openid))
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        try:
            await asyncio.wait_for(asyncio.shield(task), INLINE_BUDGET)
        except (TimeoutError, AppError, WeChatAPIError):
            pass  # the lookup carries on (or already logged); the reply does not wait for it

    async def unfollowed(self, openid: str, created: int) -> None:
        """Unfollow: no message goes to this openid again until they follow anew."""
        now = utcnow()
        await self.db.oa_followers.update_one(
            {"_id": openid, "$or": [{"event_time": {"$lte": created}}, {"event_time": None}]},
            {"$set": {"subscribed": False, "unsubscribed_at": now, "event_time": created, "updated_at": now}},
            upsert=False,
        )
        if not await self.db.oa_followers.find_one({"_id": openid}):
            try:
                await self.db.oa_followers.insert_one(
                    {
                        "_id": openid,
                        "subscribed": False,
                        "unsubscribed_at": now,
                        "event_time": created,
                        "updated_at": now,
                    }
                )
            except DuplicateKeyError:
                pass
        await self.db.users.update_many(
            {"oa_openid": openid}, {"$set": {"oa_unsubscribed": True, "oa_unsubscribed_at": now}}
        )

    async def _link(self, openid: str) -> None:
        delay = 1.0
        for remaining in range(LINK_RETRIES, 0, -1):
            try:
                info = await self.wechat.official_account.user_info(openid)
                break
            except WeChatUnavailable:
                if remaining == 1:
                    log.warning("user info for a new follower unavailable; linking deferred to their next login")
                    return
                await asyncio.sleep(delay)
                delay *= 2
            except WeChatAPIError as exc:
                if is_account_fault(exc.errcode):
                    log.error(
                        alert_line(
                            "official account", exc.errcode, "new followers are linked at their next login instead"
                        )
                    )
                else:
                    log.warning("user info refused: %s", exc.errcode)
                return
        unionid = info.get("unionid")
        if not unionid:
            return
        await self.db.oa_followers.update_one({"_id": openid}, {"$set": {"unionid": unionid}})
        follower = await self.db.oa_followers.find_one({"_id": openid})
        result = await self.db.users.update_many(
            {"unionid": unionid},
            {
                "$set": {
                    "oa_openid": openid,
                    "oa_unsubscribed": not follower.get("subscribed", False),
                    "oa_linked_at": utcnow(),
                }
            },
        )
        if result.matched_count:
            await self.db.oa_followers.update_one({"_id": openid}, {"$set": {"linked": True}})


async def link_follower_on_login(db: AsyncDatabase, user: dict[str, Any]) -> dict[str, Any]:
    """A mini-program user whose unionid already follows the account gets its openid and state."""
    unionid = user.get("unionid")
    if not unionid or user.get("oa_openid"):
        return user
    follower = await db.oa_followers.find_one({"unionid": unionid})
    if not follower:
        return user
    update = {
        "oa_openid": follower["_id"],
        "oa_unsubscribed": not follower.get("subscribed", False),
        "oa_linked_at": utcnow(),
    }
    await db.users.update_one({"_id": user["_id"]}, {"$set": update})
    await db.oa_followers.update_one({"_id": follower["_id"]}, {"$set": {"linked": True}})
    return {**user, **update}


def _push_key(fields: dict[str, str]) -> str:
    """What makes a push unique: its MsgId (messages), else FromUserName + CreateTime (+ Event)."""
    if fields.get("MsgId"):
        return f"msg:{fields['MsgId']}"
    return f"event:{fields['FromUserName']}:{fields.get('CreateTime', '')}:{fields.get('Event', '')}"


def _int(value: str | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0
