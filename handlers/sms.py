"""SMS verification codes for the customer (``POST /api/v1/sms-codes``)."""

from __future__ import annotations

from . import spec
from .base import APIHandler, authenticated


class SmsCodesHandler(APIHandler):
    @authenticated
    async def post(self) -> None:
        body = self.json_body()
        if body.get("purpose") == "bind_account":
            # the code goes to the phone on record for the account, never to a typed number
            result = await self.app.accounts.send_binding_code(self.current_user, body.get("account_no"))
        else:
            result = await self.app.sms.request_code(self.current_user, body.get("mobile"), body.get("purpose"))
        self.write_json(result, status=201)


default_handlers = [
    (r"/api/v1/sms-codes", SmsCodesHandler),
]

openapi = {
    "/api/v1/sms-codes": {
        "post": spec.operation(
            "Text a verification code",
            tag="accounts",
            description="`{mobile, purpose}` texts the typed mobile; `{purpose: bind_account, account_no}` "
            "texts the phone on record for the account. Limits in docs/accounts.md.",
            body=spec.obj(
                {"purpose": {"type": "string", "enum": ["bind_account", "apply", "seal", "login"]}},
                {"mobile": {"type": "string", "pattern": "^1[3-9][0-9]{9}$"}, "account_no": spec.ACCOUNT_NO},
            ),
            ok={201: spec.ref("SmsSent")},
            errors={
                404: ["account_not_found"],
                422: ["validation_failed"],
                429: ["too_many_requests"],
                503: ["sms_unavailable"],
            },
        ),
    },
}
