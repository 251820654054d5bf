"""Accounts: the customer's bindings (``/api/v1/accounts``) and the marketing system's upsert."""

from __future__ import annotations

from . import spec
from .base import APIHandler, InternalHandler, authenticated


class AccountsHandler(APIHandler):
    @authenticated
    async def get(self) -> None:
        self.write_json({"accounts": await self.app.binding_prefs.list_accounts(self.current_user)})

    @authenticated
    async def post(self) -> None:
        body = self.json_body()
        account = await self.app.accounts.bind(
            self.current_user,
            body.get("account_no"),
            body.get("holder_name"),
            body.get("sms_code"),
        )
        created = account.pop("created")
        self.write_json({"account": account}, status=201 if created else 200)


class AccountHandler(APIHandler):
    @authenticated
    async def delete(self, account_no: str) -> None:
        await self.app.accounts.unbind(self.current_user, account_no)
        self.set_status(204)
        self.finish()


class InternalAccountHandler(InternalHandler):
    async def put(self, account_no: str) -> None:
        account, created = await self.app.accounts.upsert(account_no, self.json_body())
        self.write_json(
            {"account": self.app.accounts.public(account), "created": created}, status=201 if created else 200
        )


default_handlers = [
    (r"/api/v1/accounts", AccountsHandler),
    (r"/api/v1/accounts/([^/]+)", AccountHandler),
    (r"/internal/v1/accounts/([^/]+)", InternalAccountHandler),
]

_ACCOUNT = spec.obj({"account": spec.ref("Account")})

openapi = {
    "/api/v1/accounts": {
        "get": spec.operation(
            "The user's bound accounts (masked)",
            tag="accounts",
            ok={200: spec.obj({"accounts": spec.array(spec.ref("Account"))})},
        ),
        "post": spec.operation(
            "Bind an account with the holder's name and an SMS code to its phone",
            tag="accounts",
            body=spec.obj(
                {
                    "account_no": spec.ACCOUNT_NO,
                    "holder_name": spec.STRING,
                    "sms_code": {"type": "string", "pattern": "^[0-9]{6}$"},
                }
            ),
            ok={201: _ACCOUNT, 200: _ACCOUNT},
            errors={
                400: ["sms_code_invalid", "sms_code_expired", "sms_code_exhausted"],
                404: ["account_not_found"],
                409: ["too_many_accounts", "account_busy"],
                422: ["validation_failed", "holder_name_mismatch"],
            },
        ),
    },
    "/api/v1/accounts/{account_no}": {
        "delete": spec.operation(
            "Unbind one's own binding",
            tag="accounts",
            ok={204: None},
            errors={404: ["account_not_found"], 409: ["account_busy"]},
        ),
    },
    "/internal/v1/accounts/{account_no}": {
        "put": spec.operation(
            "Create or update an account (marketing system)",
            tag="internal",
            body=spec.obj(
                {"holder_name": spec.STRING, "phone": spec.STRING},
                {
                    "address": spec.STRING,
                    "region": spec.STRING,
                    "feeder": spec.STRING,
                    "customer_class": {"type": "string", "enum": ["低压居民", "低压非居民", "高压"]},
                    "tariff": spec.ref("Tariff"),
                    "capacity_kva": {"type": "number"},
                    "balance_fen": spec.FEN,
                    "billing_mode": {"type": "string", "enum": ["prepaid", "postpaid"]},
                },
            ),
            ok={
                200: spec.obj({"account": spec.ref("Account"), "created": spec.BOOLEAN}),
                201: spec.obj({"account": spec.ref("Account"), "created": spec.BOOLEAN}),
            },
            errors={409: ["account_busy"], 422: ["validation_failed"]},
        ),
    },
}
