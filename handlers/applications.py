"""Applications (用电报装): the customer's submissions and 服务记录, and the marketing system's stage changes."""

from __future__ import annotations

from wx_backend.services.application_views import STATUSES
from wx_backend.services.applications import MAX_PER_PAGE

from . import spec
from .base import APIHandler, InternalHandler, authenticated


class ApplicationsHandler(APIHandler):
    @authenticated
    async def get(self) -> None:
        result = await self.app.applications.list_for_user(
            self.current_user,
            status=self.get_query_argument("status", None) or None,
            page=self.get_query_argument("page", "1"),
            per_page=self.get_query_argument("per_page", "20"),
        )
        self.write_json(result)

    @authenticated
    async def post(self) -> None:
        doc = await self.app.applications.submit(
            self.current_user,
            self.json_body(),
            idempotency_key=self.request.headers.get("Idempotency-Key"),
        )
        view = self.app.applications.views.public(doc, detailed=True)
        self.write_json({"app_no": doc["app_no"], "application": view}, status=201 if doc["created"] else 200)


class ApplicationHandler(APIHandler):
    @authenticated
    async def get(self, app_no: str) -> None:
        doc = await self.app.applications.get_owned(self.current_user, app_no)
        self.write_json({"application": self.app.applications.views.public(doc, detailed=True)})


class ApplicationCancelHandler(APIHandler):
    @authenticated
    async def post(self, app_no: str) -> None:
        doc = await self.app.applications.cancel(self.current_user, app_no)
        self.write_json({"application": self.app.applications.views.public(doc, detailed=True)})


class InternalStageHandler(InternalHandler):
    async def post(self, app_no: str) -> None:
        body = self.json_body()
        doc = await self.app.applications.advance(
            app_no,
            body.get("stage"),
            operator=body.get("operator"),
            note=body.get("note") or "",
            source="marketing",
            contract_no=body.get("contract_no"),
        )
        self.write_json(
            {
                "app_no": doc["app_no"],
                "stage": doc["stage"],
                "status": doc["status"],
                "history_length": len(doc.get("history", [])),
            }
        )


default_handlers = [
    (r"/api/v1/applications", ApplicationsHandler),
    (r"/api/v1/applications/([^/]+)", ApplicationHandler),
    (r"/api/v1/applications/([^/]+)/cancel", ApplicationCancelHandler),
    (r"/internal/v1/applications/([^/]+)/stage", InternalStageHandler),
]

_APP = spec.obj({"application": spec.ref("Application")})
_NOT_FOUND = ["application_not_found"]

openapi = {
    "/api/v1/applications": {
        "get": spec.operation(
            "The user's applications (服务记录), newest first",
            tag="applications",
            query={
                "status": {"type": "string", "enum": list(STATUSES)},
                "page": {"type": "integer", "minimum": 1, "maximum": 999_999},
                "per_page": {"type": "integer", "minimum": 1, "maximum": MAX_PER_PAGE},
            },
            ok={
                200: spec.obj(
                    {
                        "items": spec.array(spec.ref("Application")),
                        "page": spec.INTEGER,
                        "per_page": spec.INTEGER,
                        "total": spec.INTEGER,
                    }
                )
            },
            errors={422: ["validation_failed"]},
        ),
        "post": spec.operation(
            "Submit an application of a catalogue business type",
            tag="applications",
            description="The form is checked against `GET /api/v1/services/{code}`. An `Idempotency-Key` "
            "header makes a retried submission answer 200 with the first one, also when the "
            "repeats arrive together; the same key with another body is 422 "
            "`idempotency_key_reused`.",
            body=spec.obj(
                {"service": spec.STRING},
                {
                    "account_no": spec.ACCOUNT_NO,
                    "applicant": {"type": "object"},
                    "form": {"type": "object"},
                    "attachments": {"type": "object", "description": "kind -> [file_id]"},
                    "sms_code": spec.STRING,
                },
            ),
            ok={
                201: spec.obj({"app_no": spec.STRING, "application": spec.ref("Application")}),
                200: spec.obj({"app_no": spec.STRING, "application": spec.ref("Application")}),
            },
            errors={
                400: ["sms_code_invalid", "sms_code_expired", "sms_code_exhausted"],
                403: ["not_eligible"],
                404: ["account_not_found", "service_not_found", "file_not_found"],
                409: ["conflict", "idempotency_in_progress"],
                422: ["validation_failed", "idempotency_key_reused"],
                503: ["app_no_unavailable", "app_no_exhausted"],
            },
        ),
    },
    "/api/v1/applications/{app_no}": {
        "get": spec.operation(
            "One of the user's applications, with its timeline",
            tag="applications",
            ok={200: _APP},
            errors={404: _NOT_FOUND},
        ),
    },
    "/api/v1/applications/{app_no}/cancel": {
        "post": spec.operation(
            "Cancel one's own application while its stage allows",
            tag="applications",
            ok={200: _APP},
            errors={404: _NOT_FOUND, 409: ["cannot_cancel", "stage_conflict"]},
        ),
    },
    "/internal/v1/applications/{app_no}/stage": {
        "post": spec.operation(
            "Move a work order to a stage (marketing system)",
            tag="internal",
            body=spec.obj(
                {"stage": spec.STRING}, {"operator": spec.STRING, "note": spec.STRING, "contract_no": spec.STRING}
            ),
            ok={
                200: spec.obj(
                    {"app_no": spec.STRING, "stage": spec.STRING, "status": spec.STRING, "history_length": spec.INTEGER}
                )
            },
            errors={
                404: [*_NOT_FOUND, "stage_not_found"],
                409: ["invalid_stage_transition", "stage_conflict"],
                422: ["validation_failed"],
            },
        ),
    },
}
