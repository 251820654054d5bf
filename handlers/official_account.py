"""WeChat's callback for the official account: ``GET`` URL check, ``POST`` messages and events."""

from __future__ import annotations

from wx_backend.wechat.callback import MAX_BODY

from . import spec
from .base import BaseHandler

QUERY = ("signature", "timestamp", "nonce", "echostr", "encrypt_type", "msg_signature", "openid")


class OfficialAccountCallbackHandler(BaseHandler):
    max_body_bytes = MAX_BODY

    def _query(self) -> dict[str, str]:
        return {name: self.get_query_argument(name, "") for name in QUERY}

    async def get(self) -> None:
        echostr = self.app.official_account.verify_url(self._query())
        self.set_header("Content-Type", "text/plain; charset=UTF-8")
        self.finish(echostr)

    async def post(self) -> None:
        reply = await self.app.official_account.handle(self._query(), self.request.body)
        self.set_header("Content-Type", reply.content_type)
        self.finish(reply.body)


default_handlers = [
    (r"/wechat/official-account", OfficialAccountCallbackHandler),
]

_SIGNED_QUERY = {"signature": spec.STRING, "timestamp": spec.STRING, "nonce": spec.STRING}

openapi = {
    "/wechat/official-account": {
        "get": spec.operation(
            "WeChat's server URL check: echostr back when the signature is right",
            tag="wechat",
            query={**_SIGNED_QUERY, "echostr": spec.STRING},
            ok={200: {"description": "the echostr", "content": {"text/plain": {"schema": {"type": "string"}}}}},
            errors={403: ["invalid_signature"]},
        ),
        "post": spec.operation(
            "Messages and events pushed by WeChat (XML; plain or safe mode)",
            tag="wechat",
            description="Signed by `signature` (and `msg_signature` in safe mode, `encrypt_type=aes`). "
            "Answers `success` or a passive reply in XML.",
            query={**_SIGNED_QUERY, "encrypt_type": spec.STRING, "msg_signature": spec.STRING, "openid": spec.STRING},
            body_content={"text/xml": {"schema": {"type": "string"}}},
            ok={
                200: {
                    "description": "`success` or a passive reply",
                    "content": {
                        "text/plain": {"schema": {"type": "string"}},
                        "application/xml": {"schema": {"type": "string"}},
                    },
                }
            },
            errors={400: ["invalid_xml"], 403: ["invalid_signature"]},
        ),
    },
}
