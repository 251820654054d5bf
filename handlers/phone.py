"""The customer's verified mobile (``/api/v1/me/phone``): WeChat's getPhoneNumber code exchanged once."""

from __future__ import annotations

from . import spec
from .base import APIHandler, authenticated


class PhoneHandler(APIHandler):
    @authenticated
    async def get(self) -> None:
        self.write_json({"phone": await self.app.phones.current(self.current_user)})

    @authenticated
    async def post(self) -> None:
        phone = await self.app.phones.verify(self.current_user, self.json_body().get("code"))
        self.write_json({"phone": phone})

    @authenticated
    async def delete(self) -> None:
        await self.app.phones.forget(self.current_user)
        self.set_status(204)
        self.finish()


default_handlers = [
    (r"/api/v1/me/phone", PhoneHandler),
]

_PHONE = spec.obj(
    {"phone": spec.STRING, "verified_at": spec.DATETIME}, description="the verified mobile, masked (182****0490)"
)

openapi = {
    "/api/v1/me/phone": {
        "get": spec.operation(
            "The user's verified mobile (masked), or null",
            tag="accounts",
            ok={200: spec.obj({"phone": spec.nullable(_PHONE)})},
        ),
        "post": spec.operation(
            "Verify the user's mobile with a getPhoneNumber code",
            tag="accounts",
            description="Exchanges the mini-program's one-time `getPhoneNumber` code through WeChat "
            "(`getuserphonenumber`) and keeps the mobile encrypted; see docs/accounts.md.",
            body=spec.obj({"code": {"type": "string", "description": "the code of the getPhoneNumber button"}}),
            ok={200: spec.obj({"phone": _PHONE})},
            errors={
                422: ["validation_failed", "phone_code_invalid", "phone_not_supported"],
                429: ["too_many_requests"],
                502: ["wechat_phone_failed"],
                503: ["wechat_unavailable"],
            },
        ),
        "delete": spec.operation("Forget the verified mobile", tag="accounts", ok={204: None}),
    },
}
