"""Liveness and readiness probes."""

from __future__ import annotations

from pymongo.errors import PyMongoError

from . import spec
from .base import BaseHandler


class HealthHandler(BaseHandler):
    async def get(self) -> None:
        self.write_json({"status": "ok"})


class ReadyHandler(BaseHandler):
    async def get(self) -> None:
        try:
            await self.app.db.command("ping")
        except PyMongoError:
            self.write_json({"status": "unavailable", "database": "unreachable"}, status=503)
            return
        self.write_json({"status": "ok", "database": "ok"})


default_handlers = [
    (r"/healthz", HealthHandler),
    (r"/readyz", ReadyHandler),
]

openapi = {
    "/healthz": {
        "get": spec.operation("The process is alive", tag="meta", ok={200: spec.obj({"status": spec.STRING})})
    },
    "/readyz": {
        "get": spec.operation(
            "The database answers",
            tag="meta",
            ok={200: spec.obj({"status": spec.STRING, "database": spec.STRING})},
            description='503 with `{"status": "unavailable", "database": "unreachable"}` when it does not.',
        )
    },
}
