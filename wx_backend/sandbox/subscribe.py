"""Mini-program subscribe messages: the customer's consent (wx.requestSubscribeMessage) and sending.

Each acceptance of a one-time template allows one message; sending with no consent left is
43101, as on WeChat. An accepted message answers its ``msgid`` and is followed by a
``subscribe_msg_sent_event`` push to the mini-program's message-push URL when ``WX_MP_TOKEN``
is set (WeChat: when message push is configured in the console).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from tornado.httpclient import AsyncHTTPClient, HTTPRequest
from wechatpy.utils import WeChatSigner

from .account_faults import token_appid
from .base import JSONAPIHandler, SandboxHandler
from .state import SandboxError, SandboxState
from .templates import SUBSCRIBE_TEMPLATES, check_data

RECEIPT_DELAY = 0.1  # seconds between accepting a message and pushing its subscribe_msg_sent_event


@dataclass
class SubscribeState:
    consents: Counter = field(default_factory=Counter)  # (openid, template_id) -> sends left
    messages: list[dict[str, Any]] = field(default_factory=list)
    templates: dict[str, tuple[str, ...]] = field(default_factory=lambda: dict(SUBSCRIBE_TEMPLATES))
    next_msgid: int = 2000000000


def mp_state(state: SandboxState) -> SubscribeState:
    mp = state.extra.get("mp")
    if mp is None:
        mp = SubscribeState()
        state.extra["mp"] = mp
    return mp


def known_openids(state: SandboxState) -> set[str]:
    return {code.openid for code in state.login_codes.values()} | {o for o, _ in mp_state(state).consents}


async def push_sent_event(state: SandboxState, touser: str, template_id: str, msgid: int) -> int:
    """WeChat's ``subscribe_msg_sent_event`` to the mini-program's message-push URL (JSON, plain
    mode, signed with ``WX_MP_TOKEN``); nothing when no push is configured. The answer's status."""
    config = state.config
    if not config.mp_token:
        return 0
    timestamp, nonce = str(int(time.time())), str(secrets.randbelow(10**9))
    signer = WeChatSigner()
    signer.add_data(config.mp_token, timestamp, nonce)
    query = urlencode({"signature": signer.signature, "timestamp": timestamp, "nonce": nonce})
    body = {
        "ToUserName": "gh_sandboxmp001",
        "FromUserName": touser,
        "CreateTime": timestamp,
        "MsgType": "event",
        "Event": "subscribe_msg_sent_event",
        "SubscribeMsgSentEvent": {
            "List": {"TemplateId": template_id, "MsgID": str(msgid), "ErrorCode": "0", "ErrorStatus": "success"}
        },
    }
    try:
        resp = await AsyncHTTPClient().fetch(
            HTTPRequest(
                f"{config.sandbox_callback_base.rstrip('/')}/wechat/mini-program?{query}",
                method="POST",
                body=json.dumps(body).encode(),
                headers={"Content-Type": "application/json"},
                request_timeout=config.sandbox_push_timeout,
            ),
            raise_error=False,
        )
        return resp.code
    except OSError:
        return 599


class SubscribeSendHandler(JSONAPIHandler):
    endpoint = "subscribe_send"

    async def post(self) -> None:
        fault = await self.begin()
        state, mp = self.state, mp_state(self.state)
        if token_appid(state, self.get_argument("access_token", "")) != state.config.mp_appid:
            raise SandboxError(40001, "invalid credential, access_token is invalid or not latest")
        body = self.json_body()
        touser, template_id = body.get("touser"), body.get("template_id")
        if not isinstance(touser, str) or touser not in known_openids(state):
            raise SandboxError(40003, "invalid openid")
        if template_id not in mp.templates:
            raise SandboxError(40037, "invalid template_id")
        if mp.consents[(touser, template_id)] <= 0:
            raise SandboxError(43101, "user refuse to accept the msg")
        data = body.get("data")
        refused = check_data(mp.templates[template_id], data)
        if refused:
            raise SandboxError(47003, f"argument invalid! {refused} rule not matched")
        mp.consents[(touser, template_id)] -= 1
        mp.next_msgid += 1
        msgid = mp.next_msgid
        mp.messages.append(
            {
                "msgid": msgid,
                "touser": touser,
                "template_id": template_id,
                "page": body.get("page"),
                "data": {k: v.get("value") for k, v in data.items() if isinstance(v, dict)},
                "at": time.time(),
            }
        )
        asyncio.get_running_loop().call_later(
            RECEIPT_DELAY, lambda: asyncio.ensure_future(push_sent_event(state, touser, template_id, msgid))
        )
        if fault == "lost_answer":  # sent (the consent spent), but the answer never reaches the caller in time
            await asyncio.sleep(state.timeout_delay)
        self.write_json({"errcode": 0, "errmsg": "ok", "msgid": msgid})


class SubscribeAcceptHandler(SandboxHandler):
    """The customer taps 允许 in ``wx.requestSubscribeMessage``: ``count`` more sends of the template."""

    async def post(self) -> None:
        body = self.json_body()
        openid, template_id, count = body.get("openid"), body.get("template_id"), body.get("count", 1)
        if (
            not isinstance(openid, str)
            or not openid
            or not isinstance(template_id, str)
            or not isinstance(count, int)
            or count < 1
        ):
            self.write_json({"error": "openid, template_id and a positive count are required"}, status=400)
            return
        mp = mp_state(self.state)
        if template_id not in mp.templates:
            self.write_json({"error": "unknown template_id", "known": sorted(mp.templates)}, status=400)
            return
        mp.consents[(openid, template_id)] += count
        self.write_json({"openid": openid, "template_id": template_id, "remaining": mp.consents[(openid, template_id)]})


class MPMessagesHandler(SandboxHandler):
    async def get(self) -> None:
        touser = self.get_argument("touser", None)
        messages = [m for m in mp_state(self.state).messages if touser is None or m["touser"] == touser]
        self.write_json({"messages": messages})


routes = [
    (r"/cgi-bin/message/subscribe/send", SubscribeSendHandler),
    (r"/sandbox/mp/subscribe-accept", SubscribeAcceptHandler),
    (r"/sandbox/mp/messages", MPMessagesHandler),
]
