"""Accounts: the customer's bindings (``/api/v1/accounts``) and the marketing system's upsert."""

from __future__ import annotations

from .base import APIHandler, InternalHandler, authenticated


class AccountsHandler(APIHandler):
    @authenticated
    async def get(self) -> None:
        self.write_json({"accounts": await self.app.accounts.list_for_user(self.current_user)})

    @authenticated
    async def post(self) -> None:
        body = self.json_body()
        account = await self.app.accounts.bind(
            self.current_user, body.get("account_no"), body.get("holder_name"), body.get("sms_code"),
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
        self.write_json({"account": self.app.accounts.public(account), "created": created},
                        status=201 if created else 200)


default_handlers = [
    (r"/api/v1/accounts", AccountsHandler),
    (r"/api/v1/accounts/([^/]+)", AccountHandler),
    (r"/internal/v1/accounts/([^/]+)", InternalAccountHandler),
]
