"""Login (code2session) and the current user."""

from __future__ import annotations

from . import spec
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

openapi = {
    "/api/v1/session": {
        "post": spec.operation(
            "Log in with a wx.login code",
            tag="session",
            body=spec.obj({"code": {"type": "string", "description": "the js_code of wx.login"}}),
            ok={200: spec.obj({"token": spec.STRING, "expires_in": spec.INTEGER, "user": spec.ref("User")})},
            errors={
                401: ["wechat_login_failed"],
                403: ["wechat_high_risk_user"],
                422: ["validation_failed"],
                429: ["wechat_login_rate_limited"],
                503: ["wechat_unavailable", "wechat_login_unavailable"],
            },
        ),
        "delete": spec.operation("Log out (the token stops working)", tag="session", ok={204: None}),
    },
    "/api/v1/me": {
        "get": spec.operation("The current user", tag="session", ok={200: spec.obj({"user": spec.ref("User")})}),
    },
}
