"""Liveness and readiness probes."""

from __future__ import annotations

from pymongo.errors import PyMongoError

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
