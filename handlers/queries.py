"""Queries (查询服务): bills, charges, usage analysis, outages; and the marketing system's feeds for them."""

from __future__ import annotations

from wx_backend.errors import ValidationFailed
from wx_backend.services.billing import detail_view
from wx_backend.services.outages import outage_view

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
            result = await self.app.usage.monthly(self.current_user, account_no, self.get_argument("from", None),
                                                  self.get_argument("to", None))
        else:
            await self.app.accounts.get_owned(self.current_user, account_no)
            raise ValidationFailed(details=[{"field": "granularity", "message": "应为 month 或 day"}])
        self.write_json(result)


class OutagesHandler(APIHandler):
    async def get(self) -> None:
        account_no = self.get_argument("account_no", None)
        region = self.get_argument("region", None)
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
