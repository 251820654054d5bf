"""Queries (查询服务): bills, charges, usage analysis, outages; and the marketing system's feeds for them."""

from __future__ import annotations

from wx_backend.errors import ValidationFailed
from wx_backend.services.billing import detail_view
from wx_backend.services.outages import outage_view

from . import spec
from .base import APIHandler, InternalHandler, authenticated


class BillsHandler(APIHandler):
    @authenticated
    async def get(self, account_no: str) -> None:
        self.write_json(await self.app.bills.list_for(self.current_user, account_no, self.get_argument("year", None)))


class BillHandler(APIHandler):
    @authenticated
    async def get(self, account_no: str, period: str) -> None:
        self.write_json({"bill": await self.app.bills.get_for(self.current_user, account_no, period)})


class ChargesHandler(APIHandler):
    @authenticated
    async def get(self, account_no: str) -> None:
        self.write_json(await self.app.bills.charges(self.current_user, account_no))


class UsageHandler(APIHandler):
    @authenticated
    async def get(self, account_no: str) -> None:
        granularity = self.get_argument("granularity", "month")
        if granularity == "day":
            if self.get_argument("from", None) or self.get_argument("to", None):
                raise ValidationFailed(details=[{"field": "from", "message": "按日查询请用 month 参数"}])
            result = await self.app.usage.daily(self.current_user, account_no, self.get_argument("month", None))
        elif granularity == "month":
            if self.get_argument("month", None) is not None:
                raise ValidationFailed(details=[{"field": "month", "message": "按月查询请用 from 和 to 参数"}])
            result = await self.app.usage.monthly(
                self.current_user, account_no, self.get_argument("from", None), self.get_argument("to", None)
            )
        else:
            await self.app.accounts.get_owned(self.current_user, account_no)
            raise ValidationFailed(details=[{"field": "granularity", "message": "应为 month 或 day"}])
        self.write_json(result)


class OutagesHandler(APIHandler):
    async def get(self) -> None:
        account_no = self.get_argument("account_no", None)
        region = self.get_argument("region", None)
        if account_no is None and region is None and self.current_user is not None:
            account_no = await self.app.binding_prefs.default_account_no(self.current_user)  # 户号管理
        if account_no is not None:
            # an account's outages need its owner; a region's list is public
            result = await self.app.outages.for_account(self.require_user(), account_no)
        elif region is not None:
            result = await self.app.outages.for_region(region)
        else:
            raise ValidationFailed(details=[{"field": "account_no", "message": "请提供 account_no 或 region"}])
        self.write_json(result)


class InternalBillHandler(InternalHandler):
    async def put(self, account_no: str, period: str) -> None:
        bill, created = await self.app.bills.upsert(account_no, period, self.json_body())
        self.write_json({"bill": detail_view(bill), "created": created}, status=201 if created else 200)


class InternalUsageHandler(InternalHandler):
    max_body_bytes = 1024 * 1024  # up to MAX_ENTRIES readings

    async def put(self, account_no: str) -> None:
        body = self.json_body()
        self.write_json(await self.app.usage.put(account_no, body.get("entries")))


class InternalOutagesHandler(InternalHandler):
    async def post(self) -> None:
        outage, created = await self.app.outages.publish(self.json_body())
        self.write_json({"outage": outage_view(outage), "created": created}, status=201 if created else 200)


class InternalOutageHandler(InternalHandler):
    async def put(self, outage_id: str) -> None:
        self.write_json({"outage": outage_view(await self.app.outages.update(outage_id, self.json_body()))})


class InternalOutageCancelHandler(InternalHandler):
    async def post(self, outage_id: str) -> None:
        body = self.json_body()
        self.write_json({"outage": outage_view(await self.app.outages.cancel(outage_id, body.get("reason")))})


default_handlers = [
    (r"/api/v1/accounts/([^/]+)/bills", BillsHandler),
    (r"/api/v1/accounts/([^/]+)/bills/([^/]+)", BillHandler),
    (r"/api/v1/accounts/([^/]+)/charges", ChargesHandler),
    (r"/api/v1/accounts/([^/]+)/usage", UsageHandler),
    (r"/api/v1/outages", OutagesHandler),
    (r"/internal/v1/accounts/([^/]+)/bills/([^/]+)", InternalBillHandler),
    (r"/internal/v1/accounts/([^/]+)/usage", InternalUsageHandler),
    (r"/internal/v1/outages", InternalOutagesHandler),
    (r"/internal/v1/outages/([^/]+)", InternalOutageHandler),
    (r"/internal/v1/outages/([^/]+)/cancel", InternalOutageCancelHandler),
]

_ACCOUNT_NOT_FOUND = ["account_not_found"]
_PERIOD = {"type": "string", "description": "YYYY-MM", "examples": ["2026-10"]}
_OUTAGE = spec.obj({"outage": spec.ref("Outage")})
_OUTAGE_BODY = spec.obj(
    optional={
        "ref": spec.STRING,
        "kind": {"type": "string", "enum": ["planned", "unplanned"]},
        "regions": spec.array(spec.STRING),
        "feeders": spec.array(spec.STRING),
        "start": spec.DATETIME,
        "end": spec.DATETIME,
        "reason": spec.STRING,
        "area": spec.STRING,
    }
)

openapi = {
    "/api/v1/accounts/{account_no}/bills": {
        "get": spec.operation(
            "An account's monthly bills (the caller's bound account), newest first",
            tag="queries",
            query={"year": {"type": "string", "description": "YYYY; without it, the last 36 months"}},
            ok={
                200: spec.obj(
                    {
                        "account_no": spec.STRING,
                        "year": spec.nullable(spec.STRING),
                        "bills": spec.array({"type": "object"}),
                    }
                )
            },
            errors={404: _ACCOUNT_NOT_FOUND, 422: ["validation_failed"]},
        ),
    },
    "/api/v1/accounts/{account_no}/bills/{period}": {
        "get": spec.operation(
            "One monthly bill: readings, kWh by period and tier, prices, settlements",
            tag="queries",
            path={"period": _PERIOD},
            ok={200: spec.obj({"bill": spec.obj({"account_no": spec.STRING, "period": spec.STRING})})},
            errors={404: [*_ACCOUNT_NOT_FOUND, "bill_not_found"], 422: ["validation_failed"]},
        ),
    },
    "/api/v1/accounts/{account_no}/charges": {
        "get": spec.operation(
            "Consumption and charges: balance, owed, this month's estimate, last month, this year",
            tag="queries",
            ok={
                200: spec.obj(
                    {
                        "account_no": spec.STRING,
                        "balance_fen": spec.FEN,
                        "owed_fen": spec.FEN,
                        "unpaid_bills": spec.INTEGER,
                        "this_month": {"type": "object"},
                        "last_month": {"type": "object"},
                        "this_year": {"type": "object"},
                    }
                )
            },
            errors={404: _ACCOUNT_NOT_FOUND},
        ),
    },
    "/api/v1/accounts/{account_no}/usage": {
        "get": spec.operation(
            "Usage analysis by month (from, to: YYYY-MM) or by day (month: YYYY-MM)",
            tag="queries",
            query={
                "granularity": {"type": "string", "enum": ["month", "day"]},
                "from": _PERIOD,
                "to": _PERIOD,
                "month": _PERIOD,
            },
            ok={200: spec.obj({"account_no": spec.STRING, "granularity": spec.STRING})},
            errors={404: _ACCOUNT_NOT_FOUND, 422: ["validation_failed"]},
        ),
    },
    "/api/v1/outages": {
        "get": spec.operation(
            "Outage notices for a bound account (login needed) or for a region (public)",
            tag="queries",
            description="`account_no` needs the bearer token of a user who bound it; `region` needs none; "
            "with neither, a logged-in user's default account is meant (docs/accounts.md). "
            "The security of this operation is therefore optional.",
            query={"account_no": spec.ACCOUNT_NO, "region": spec.text(50)},
            ok={200: spec.obj({"outages": spec.array(spec.ref("Outage"))})},
            errors={401: ["unauthorized", "invalid_token"], 404: _ACCOUNT_NOT_FOUND, 422: ["validation_failed"]},
        )
        | {"security": [{}, {"bearerAuth": []}]},
    },
    "/internal/v1/accounts/{account_no}/bills/{period}": {
        "put": spec.operation(
            "Create or update a monthly bill (marketing system); payments already made are kept",
            tag="internal",
            path={"period": _PERIOD},
            body={"type": "object"},
            ok={
                200: spec.obj({"bill": {"type": "object"}, "created": spec.BOOLEAN}),
                201: spec.obj({"bill": {"type": "object"}, "created": spec.BOOLEAN}),
            },
            errors={
                404: _ACCOUNT_NOT_FOUND,
                409: ["bill_amount_below_paid", "account_busy", "offline_paid_decreased"],
                422: ["validation_failed"],
            },
        ),
    },
    "/internal/v1/accounts/{account_no}/usage": {
        "put": spec.operation(
            "Create or update daily and monthly readings (marketing system)",
            tag="internal",
            body=spec.obj({"entries": spec.array({"type": "object"})}),
            ok={200: spec.obj({"received": spec.INTEGER, "created": spec.INTEGER, "updated": spec.INTEGER})},
            errors={404: _ACCOUNT_NOT_FOUND, 422: ["validation_failed"]},
        ),
    },
    "/internal/v1/outages": {
        "post": spec.operation(
            "Publish an outage notice (idempotent by `ref`); matching accounts' users are notified",
            tag="internal",
            body=_OUTAGE_BODY,
            ok={
                201: spec.obj({"outage": spec.ref("Outage"), "created": spec.BOOLEAN}),
                200: spec.obj({"outage": spec.ref("Outage"), "created": spec.BOOLEAN}),
            },
            errors={409: ["outage_busy"], 422: ["validation_failed"]},
        ),
    },
    "/internal/v1/outages/{outage_id}": {
        "put": spec.operation(
            "Update an outage notice",
            tag="internal",
            body=_OUTAGE_BODY,
            ok={200: _OUTAGE},
            errors={404: ["outage_not_found"], 409: ["outage_busy", "outage_cancelled"], 422: ["validation_failed"]},
        ),
    },
    "/internal/v1/outages/{outage_id}/cancel": {
        "post": spec.operation(
            "Cancel an outage notice",
            tag="internal",
            body=spec.obj(optional={"reason": spec.STRING}),
            body_required=False,
            ok={200: _OUTAGE},
            errors={404: ["outage_not_found"], 409: ["outage_busy", "outage_cancelled"], 422: ["validation_failed"]},
        ),
    },
}
