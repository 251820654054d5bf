"""The catalogue of business types (用电报装服务): public, no login needed."""

from __future__ import annotations

from . import spec
from .base import APIHandler


class ServicesHandler(APIHandler):
    async def get(self) -> None:
        self.write_json({"services": self.app.catalog.list()})


class ServiceHandler(APIHandler):
    async def get(self, code: str) -> None:
        self.write_json(self.app.catalog.schema(code))


default_handlers = [
    (r"/api/v1/services", ServicesHandler),
    (r"/api/v1/services/([^/]+)", ServiceHandler),
]

openapi = {
    "/api/v1/services": {
        "get": spec.operation(
            "The business types (用电报装服务)",
            tag="catalogue",
            ok={200: spec.obj({"services": spec.array(spec.ref("ServiceSummary"))})},
        ),
    },
    "/api/v1/services/{code}": {
        "get": spec.operation(
            "A business type's form schema: fields, attachments, stages, eligibility",
            tag="catalogue",
            ok={200: spec.obj({"code": spec.STRING, "name": spec.STRING, "eligibility": {"type": "object"}})},
            errors={404: ["service_not_found"]},
        ),
    },
}
