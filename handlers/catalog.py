"""The catalogue of business types (用电报装服务): public, no login needed."""

from __future__ import annotations

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
