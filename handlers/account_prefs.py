"""户号管理: a remark per binding and the default account (``/api/v1/accounts/default``, ``.../preferences``).

This module's name sorts before ``accounts``, so ``/api/v1/accounts/default`` is routed here
before ``/api/v1/accounts/{account_no}`` can take it.
"""

from __future__ import annotations

from . import spec
from .base import APIHandler, authenticated


class DefaultAccountHandler(APIHandler):
    @authenticated
    async def get(self) -> None:
        self.write_json({"account": await self.app.binding_prefs.default_account(self.current_user)})


class PreferencesHandler(APIHandler):
    @authenticated
    async def patch(self, account_no: str) -> None:
        account = await self.app.binding_prefs.update(self.current_user, account_no, self.json_body())
        self.write_json({"account": account})


default_handlers = [
    (r"/api/v1/accounts/default", DefaultAccountHandler),
    (r"/api/v1/accounts/([^/]+)/preferences", PreferencesHandler),
]

_ACCOUNT = spec.obj({"account": spec.ref("Account")})

openapi = {
    "/api/v1/accounts/default": {
        "get": spec.operation(
            "The default account: the one chosen, else the earliest bound",
            tag="accounts",
            ok={200: _ACCOUNT},
            errors={404: ["account_not_found"]},
        ),
    },
    "/api/v1/accounts/{account_no}/preferences": {
        "patch": spec.operation(
            "Set one's remark (≤ 10 characters; null or empty clears it) or default account",
            tag="accounts",
            path={"account_no": spec.ACCOUNT_NO},
            body=spec.obj(
                optional={"remark": spec.nullable({"type": "string", "maxLength": 10}), "default": spec.BOOLEAN}
            ),
            ok={200: _ACCOUNT},
            errors={404: ["account_not_found"], 422: ["validation_failed"]},
        ),
    },
}
