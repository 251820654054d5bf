"""Login (code2session) and the current user."""

from __future__ import annotations

from .base import APIHandler, authenticated


class SessionHandler(APIHandler):
    async def post(self) -> None:
        body = self.json_body()
        result = await self.app.users.login(body.get("code"))
        self.write_json(result)

    @authenticated
    async def delete(self) -> None:
        await self.app.users.logout(self.bearer_token)
        self.set_status(204)
        self.finish()


class MeHandler(APIHandler):
    @authenticated
    async def get(self) -> None:
        self.write_json({"user": self.app.users.public(self.current_user)})


default_handlers = [
    (r"/api/v1/session", SessionHandler),
    (r"/api/v1/me", MeHandler),
]
