"""SMS verification codes for the customer (``POST /api/v1/sms-codes``)."""

from __future__ import annotations

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
