"""WeChat's message push for the mini-program: subscribe-message delivery results.

Configured in the mini-program console (开发管理 > 消息推送) with the URL
``/wechat/mini-program``, Token ``WX_MP_TOKEN``, plain mode and JSON. The backend uses the
``subscribe_msg_sent_event`` results as delivery receipts: a send whose answer was lost is not
sent again (and spends no second consent) when WeChat reports it delivered.
"""

from __future__ import annotations

import json

from wechatpy.exceptions import InvalidSignatureException
from wechatpy.utils import check_signature

from wx_backend.errors import NotFound
from wx_backend.services.official_account import CallbackForbidden, CallbackMalformed
from wx_backend.wechat.callback import MAX_BODY

from . import spec
from .base import BaseHandler


class MiniProgramPushHandler(BaseHandler):
    max_body_bytes = MAX_BODY

    def _verify(self) -> None:
        token = self.app.config.mp_token
        if not token:
            raise NotFound()
        try:
            check_signature(
                token,
                self.get_query_argument("signature", ""),
                self.get_query_argument("timestamp", ""),
                self.get_query_argument("nonce", ""),
            )
        except InvalidSignatureException as exc:
            raise CallbackForbidden() from exc

    async def get(self) -> None:
        self._verify()
        self.set_header("Content-Type", "text/plain; charset=UTF-8")
        self.finish(self.get_query_argument("echostr", ""))

    async def post(self) -> None:
        self._verify()
        try:
            push = json.loads(self.request.body)
            openid = push["FromUserName"]
            if not isinstance(push, dict) or not isinstance(openid, str):
                raise ValueError
        except (ValueError, KeyError, TypeError) as exc:
            raise CallbackMalformed(code="invalid_json", details={"reason": "json"}) from exc
        if push.get("Event") == "subscribe_msg_sent_event":
            event = push.get("SubscribeMsgSentEvent") or push
            items = event.get("List") if isinstance(event, dict) else None
            for item in items if isinstance(items, list) else [items]:
                try:
                    await self.app.outbox.record_subscribe_receipt(
                        int(item["MsgID"]),
                        openid,
                        str(item["TemplateId"]),
                        int(item.get("ErrorCode", 0)),
                        str(item.get("ErrorStatus", "")),
                    )
                except (KeyError, TypeError, ValueError) as exc:
                    raise CallbackMalformed(code="invalid_json", details={"reason": "List"}) from exc
        self.set_header("Content-Type", "text/plain; charset=UTF-8")
        self.finish("success")


default_handlers = [
    (r"/wechat/mini-program", MiniProgramPushHandler),
]

_SIGNED_QUERY = {"signature": spec.STRING, "timestamp": spec.STRING, "nonce": spec.STRING}

openapi = {
    "/wechat/mini-program": {
        "get": spec.operation(
            "WeChat's message-push URL check for the mini-program: echostr back when the signature is right",
            tag="wechat",
            query={**_SIGNED_QUERY, "echostr": spec.STRING},
            ok={200: {"description": "the echostr", "content": {"text/plain": {"schema": {"type": "string"}}}}},
            errors={403: ["invalid_signature"], 404: ["not_found"]},
        ),
        "post": spec.operation(
            "Mini-program message push (JSON, plain mode): subscribe-message delivery results",
            tag="wechat",
            description="Signed by `signature` with `WX_MP_TOKEN`; `subscribe_msg_sent_event` results are "
            "recorded as delivery receipts. 404 while `WX_MP_TOKEN` is empty.",
            query=_SIGNED_QUERY,
            body_content={"application/json": {"schema": {"type": "object"}}},
            ok={200: {"description": "`success`", "content": {"text/plain": {"schema": {"type": "string"}}}}},
            errors={400: ["invalid_json"], 403: ["invalid_signature"], 404: ["not_found"]},
        ),
    },
}
