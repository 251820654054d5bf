"""WeChat's callback for the official account: ``GET`` URL check, ``POST`` messages and events."""

from __future__ import annotations

from .base import BaseHandler

QUERY = ("signature", "timestamp", "nonce", "echostr", "encrypt_type", "msg_signature", "openid")


class OfficialAccountCallbackHandler(BaseHandler):
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
