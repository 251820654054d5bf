"""The official account on WeChat's side: followers, user info, template messages, pushed events.

``/sandbox/oa/follow`` and ``/sandbox/oa/unfollow`` play a customer following the account:
the sandbox pushes the subscribe/unsubscribe event to the backend's callback, signed with
the server Token and, when ``WX_OA_AES_KEY`` is set, encrypted (safe mode), exactly as
WeChat does. A template message that is accepted is followed by a TEMPLATESENDJOBFINISH push.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from dataclasses import dataclass, field
from datetime import date
from typing import Any
from urllib.parse import urlencode
from xml.sax.saxutils import escape

import defusedxml.ElementTree as safe_et
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest
from wechatpy.crypto import WeChatCrypto
from wechatpy.utils import WeChatSigner

from .account_faults import token_appid
from .base import JSONAPIHandler, SandboxHandler
from .state import SandboxError, SandboxState
from .templates import TEMPLATE_MESSAGE_TEMPLATES, check_data

log = logging.getLogger(__name__)

RECEIPT_DELAY = 0.1  # seconds between accepting a template message and pushing its receipt
GH_ID = "gh_sandbox00001"


@dataclass
class OfficialAccountState:
    followers: dict[str, dict[str, Any]] = field(default_factory=dict)  # openid -> {unionid, subscribe, ...}
    messages: list[dict[str, Any]] = field(default_factory=list)
    client_msg_ids: dict[tuple[str, str], tuple[int, float]] = field(default_factory=dict)  # -> msgid, when
    templates: dict[str, tuple[str, ...]] = field(default_factory=lambda: dict(TEMPLATE_MESSAGE_TEMPLATES))
    quota: int = 100000
    day: date | None = None
    sent_today: int = 0
    next_msgid: int = 1000000000
    last_event_time: dict[str, int] = field(default_factory=dict)
    repeats: int = 0  # sends absorbed by client_msg_id: each one would have been a duplicate


def oa_state(state: SandboxState) -> OfficialAccountState:
    oa = state.extra.get("oa")
    if oa is None:
        config = state.config
        oa = OfficialAccountState(quota=config.sandbox_template_quota)
        state.extra["oa"] = oa
    return oa


def _sign(*parts: str) -> str:
    signer = WeChatSigner()
    signer.add_data(*parts)
    return signer.signature


def event_xml(openid: str, create_time: int, event: str, **extra: str) -> str:
    parts = [
        f"<ToUserName><![CDATA[{GH_ID}]]></ToUserName>",
        f"<FromUserName><![CDATA[{escape(openid)}]]></FromUserName>",
        f"<CreateTime>{create_time}</CreateTime>",
        "<MsgType><![CDATA[event]]></MsgType>",
        f"<Event><![CDATA[{event}]]></Event>",
    ]
    parts += [f"<{name}>{escape(str(value))}</{name}>" for name, value in extra.items()]
    return "<xml>" + "".join(parts) + "</xml>"


PUSH_TRIES = 3  # WeChat: no answer within 5 s, the connection is dropped and the push sent again


async def push(state: SandboxState, xml: str) -> tuple[int, str]:
    """POST a push to the backend's callback as WeChat would; ``(status, body)`` of the answer heard.

    As WeChat does, a push that gets no answer within ``WX_SANDBOX_PUSH_TIMEOUT`` (5 s), or no
    connection, is sent again, three tries in all, each freshly signed. The fault
    ``oa_push``/``lost_answer`` makes the sandbox miss one answer (it came too late), so the
    backend sees the same push twice. ``state.extra["oa_push_tries"]`` counts the tries.
    """
    status, answer = 599, "no answer"
    for _ in range(PUSH_TRIES):
        state.extra["oa_push_tries"] = state.extra.get("oa_push_tries", 0) + 1
        status, answer = await _push_once(state, xml)
        if state.take_fault("oa_push") == "lost_answer":
            status, answer = 599, "answer too late"
        if status != 599:
            break
    return status, answer


async def _push_once(state: SandboxState, xml: str) -> tuple[int, str]:
    config = state.config
    timestamp, nonce = str(int(time.time())), str(secrets.randbelow(10**9))
    query = {"signature": _sign(config.oa_token, timestamp, nonce), "timestamp": timestamp, "nonce": nonce}
    body = xml
    if config.oa_aes_key:
        envelope = WeChatCrypto(config.oa_token, config.oa_aes_key, config.oa_appid).encrypt_message(
            xml, nonce, timestamp
        )
        encrypt = safe_et.fromstring(envelope).findtext("Encrypt")
        query.update(encrypt_type="aes", msg_signature=_sign(config.oa_token, timestamp, nonce, encrypt))
        body = f"<xml><ToUserName><![CDATA[{GH_ID}]]></ToUserName><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>"
    url = config.sandbox_callback_base.rstrip("/") + "/wechat/official-account?" + urlencode(query)
    try:
        resp = await AsyncHTTPClient().fetch(
            HTTPRequest(
                url,
                method="POST",
                body=body.encode(),
                headers={"Content-Type": "text/xml"},
                connect_timeout=config.sandbox_push_timeout,
                request_timeout=config.sandbox_push_timeout,
            )
        )
        return resp.code, resp.body.decode(errors="replace")
    except HTTPClientError as exc:
        if exc.code == 599:
            return 599, "timeout"
        return exc.code, (exc.response.body.decode(errors="replace") if exc.response else str(exc))
    except OSError as exc:
        return 599, type(exc).__name__


def _event_time(oa: OfficialAccountState, openid: str) -> int:
    # strictly increasing per user, as WeChat's events are distinct pushes
    now = max(int(time.time()), oa.last_event_time.get(openid, 0) + 1)
    oa.last_event_time[openid] = now
    return now


class UserInfoHandler(JSONAPIHandler):
    endpoint = "user_info"

    async def get(self) -> None:
        await self.begin()
        if token_appid(self.state, self.get_argument("access_token", "")) != self.state.config.oa_appid:
            raise SandboxError(40001, "invalid credential, access_token is invalid or not latest")
        openid = self.get_argument("openid", "")
        follower = oa_state(self.state).followers.get(openid)
        if follower is None:
            raise SandboxError(40003, "invalid openid")
        if not follower["subscribe"]:
            body: dict[str, Any] = {"subscribe": 0, "openid": openid, "tagid_list": []}
        else:
            body = {
                "subscribe": 1,
                "openid": openid,
                "language": "zh_CN",
                "subscribe_time": follower["subscribe_time"],
                "remark": "",
                "groupid": 0,
                "tagid_list": [],
                "subscribe_scene": "ADD_SCENE_SEARCH",
                "qr_scene": 0,
                "qr_scene_str": "",
            }
        if follower.get("unionid"):
            body["unionid"] = follower["unionid"]
        self.write_json(body)


class TemplateSendHandler(JSONAPIHandler):
    endpoint = "template_send"

    async def post(self) -> None:
        fault = await self.begin()
        state, oa = self.state, oa_state(self.state)
        if token_appid(state, self.get_argument("access_token", "")) != state.config.oa_appid:
            raise SandboxError(40001, "invalid credential, access_token is invalid or not latest")
        body = self.json_body()
        touser, template_id = body.get("touser"), body.get("template_id")
        if not isinstance(touser, str) or touser not in oa.followers:
            raise SandboxError(40003, "invalid openid")
        if fault == "unsubscribed" or not oa.followers[touser]["subscribe"]:
            raise SandboxError(43004, "require subscribe")
        if template_id not in oa.templates:
            raise SandboxError(40037, "invalid template_id")
        data = body.get("data")
        refused = check_data(oa.templates[template_id], data)
        if refused:
            raise SandboxError(47003, f"argument invalid! {refused} rule not matched")
        miniprogram = body.get("miniprogram")
        if miniprogram is not None:
            if not isinstance(miniprogram, dict) or miniprogram.get("appid") != state.config.mp_appid:
                raise SandboxError(40013, "invalid miniprogram appid")
            if not isinstance(miniprogram.get("pagepath"), str) or not miniprogram["pagepath"]:
                raise SandboxError(47003, "argument invalid! miniprogram.pagepath")
        client_msg_id = body.get("client_msg_id")
        remembered = oa.client_msg_ids.get((touser, client_msg_id)) if isinstance(client_msg_id, str) else None
        if remembered and time.time() - remembered[1] < state.config.sandbox_client_msg_id_ttl:
            oa.repeats += 1  # WeChat remembers a client_msg_id for 10 minutes, then sends anew
            self.write_json({"errcode": 0, "errmsg": "ok", "msgid": remembered[0]})
            return
        today = date.today()
        if oa.day != today:
            oa.day, oa.sent_today = today, 0
        if oa.sent_today >= oa.quota:
            raise SandboxError(45009, "reach max api daily quota limit")
        oa.sent_today += 1
        oa.next_msgid += 1
        msgid = oa.next_msgid
        if isinstance(client_msg_id, str):
            oa.client_msg_ids[(touser, client_msg_id)] = (msgid, time.time())
        oa.messages.append(
            {
                "msgid": msgid,
                "touser": touser,
                "template_id": template_id,
                "data": {k: v.get("value") for k, v in data.items() if isinstance(v, dict)},
                "miniprogram": miniprogram,
                "url": body.get("url"),
                "client_msg_id": client_msg_id,
                "at": time.time(),
            }
        )
        asyncio.get_running_loop().call_later(
            RECEIPT_DELAY,
            lambda: asyncio.ensure_future(
                push(
                    state,
                    event_xml(touser, int(time.time()), "TEMPLATESENDJOBFINISH", MsgID=str(msgid), Status="success"),
                )
            ),
        )
        if fault == "lost_answer":  # sent, but the answer never reaches the caller in time
            await asyncio.sleep(state.timeout_delay)
        self.write_json({"errcode": 0, "errmsg": "ok", "msgid": msgid})


class FollowHandler(SandboxHandler):
    """The customer follows the account (from search or a QR code)."""

    async def post(self) -> None:
        body = self.json_body()
        openid, unionid = body.get("openid"), body.get("unionid")
        if not isinstance(openid, str) or not openid:
            self.write_json({"error": "openid is required"}, status=400)
            return
        oa = oa_state(self.state)
        previous = oa.followers.get(openid, {})
        oa.followers[openid] = {
            "unionid": unionid or previous.get("unionid"),
            "subscribe": True,
            "subscribe_time": int(time.time()),
        }
        tries = self.state.extra.get("oa_push_tries", 0)
        status, answer = await push(self.state, event_xml(openid, _event_time(oa, openid), "subscribe"))
        self.write_json({"status": status, "body": answer, "tries": self.state.extra.get("oa_push_tries", 0) - tries})


class UnfollowHandler(SandboxHandler):
    async def post(self) -> None:
        body = self.json_body()
        openid = body.get("openid")
        oa = oa_state(self.state)
        if not isinstance(openid, str) or openid not in oa.followers:
            self.write_json({"error": "unknown follower"}, status=400)
            return
        oa.followers[openid]["subscribe"] = False
        status, answer = await push(self.state, event_xml(openid, _event_time(oa, openid), "unsubscribe"))
        self.write_json({"status": status, "body": answer})


class OAMessagesHandler(SandboxHandler):
    """Template messages received (all, or one user's), oldest first."""

    async def get(self) -> None:
        touser = self.get_argument("touser", None)
        messages = [m for m in oa_state(self.state).messages if touser is None or m["touser"] == touser]
        self.write_json({"messages": messages, "repeats": oa_state(self.state).repeats})


routes = [
    (r"/cgi-bin/user/info", UserInfoHandler),
    (r"/cgi-bin/message/template/send", TemplateSendHandler),
    (r"/sandbox/oa/follow", FollowHandler),
    (r"/sandbox/oa/unfollow", UnfollowHandler),
    (r"/sandbox/oa/messages", OAMessagesHandler),
]
