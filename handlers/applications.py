"""Applications (用电报装): the customer's submissions and 服务记录, and the marketing system's stage changes."""

from __future__ import annotations

from .base import APIHandler, InternalHandler, authenticated


class ApplicationsHandler(APIHandler):
    @authenticated
    async def get(self) -> None:
        result = await self.app.applications.list_for_user(
            self.current_user, status=self.get_query_argument("status", None) or None,
            page=self.get_query_argument("page", "1"), per_page=self.get_query_argument("per_page", "20"),
        )
        self.write_json(result)

    @authenticated
    async def post(self) -> None:
        doc = await self.app.applications.submit(
            self.current_user, self.json_body(), idempotency_key=self.request.headers.get("Idempotency-Key"),
        )
        view = self.app.applications.public(doc, detailed=True)
        self.write_json({"app_no": doc["app_no"], "application": view}, status=201 if doc["created"] else 200)


class ApplicationHandler(APIHandler):
    @authenticated
    async def get(self, app_no: str) -> None:
        doc = await self.app.applications.get_owned(self.current_user, app_no)
        self.write_json({"application": self.app.applications.public(doc, detailed=True)})


class ApplicationCancelHandler(APIHandler):
    @authenticated
    async def post(self, app_no: str) -> None:
        doc = await self.app.applications.cancel(self.current_user, app_no)
        self.write_json({"application": self.app.applications.public(doc, detailed=True)})


class InternalStageHandler(InternalHandler):
    async def post(self, app_no: str) -> None:
        body = self.json_body()
        doc = await self.app.applications.advance(
            app_no, body.get("stage"), operator=body.get("operator"), note=body.get("note") or "",
            source="marketing", contract_no=body.get("contract_no"),
        )
        self.write_json({"app_no": doc["app_no"], "stage": doc["stage"], "status": doc["status"],
                         "history_length": len(doc.get("history", []))})


default_handlers = [
    (r"/api/v1/applications", ApplicationsHandler),
    (r"/api/v1/applications/([^/]+)", ApplicationHandler),
    (r"/api/v1/applications/([^/]+)/cancel", ApplicationCancelHandler),
    (r"/internal/v1/applications/([^/]+)/stage", InternalStageHandler),
]
