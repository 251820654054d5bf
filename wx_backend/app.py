"""The Tornado ``Application``: holds the services (``services/registry.py``) and the background tasks.

Routes come from the ``handlers`` package (the HTTP layer), passed in by the entry point,
so this module never imports the layer above it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import tornado.web
from pymongo.errors import PyMongoError

from .bodies import BoundedBody
from .config import Config
from .logs import request_id
from .services.registry import Services

log = logging.getLogger(__name__)


class Application(tornado.web.Application):
    def __init__(self, config: Config, routes: list, *, fail_fast: bool = True, **settings: Any):
        self.config = config
        # every service, built from the configuration (services/registry.py); admin scripts pass fail_fast=False
        self.services = Services.connect(config, fail_fast=fail_fast).build_all()
        self.client = self.services.client
        self.db = self.services.db
        self._tasks: list[asyncio.Task] = []
        settings.setdefault("log_function", _log_request)
        settings.setdefault("xheaders", False)  # forwarded headers are read only from trusted proxies
        super().__init__(routes, **settings)

    def __getattr__(self, name: str) -> Any:
        # handlers reach a service as ``self.application.<name>``
        services = self.__dict__.get("services")
        if services is None or name.startswith("_"):
            raise AttributeError(name)
        return getattr(services, name)

    def start_request(self, server_conn: object, request_conn: Any) -> Any:
        # every request's body is held to its handler's max_body_bytes (bodies.py)
        return BoundedBody(super().start_request(server_conn, request_conn), request_conn)

    async def startup(self) -> None:
        self._tasks.append(asyncio.create_task(self._prepare_database()))
        if self.config.embedded_workers:
            from .workers import build  # the worker imports the services, not the other way round

            self._tasks.append(asyncio.create_task(build(self.services).run()))
            from .payment_followup import run_forever

            self._tasks.append(asyncio.create_task(run_forever(self.payments, self.config.pay_followup_interval)))
            from . import cleanup

            self._tasks.append(asyncio.create_task(cleanup.run_forever(self.db, self.config.cleanup_interval)))

    async def _prepare_database(self) -> None:
        # The process starts even while the database is down: /readyz says 503 until it is back.
        delay = 0.5
        while True:
            try:
                await self.services.ensure_indexes()
                return
            except PyMongoError as exc:
                log.warning("database not ready (%s); retrying", type(exc).__name__)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10)

    async def shutdown(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.services.close()


def _log_request(handler: tornado.web.RequestHandler) -> None:
    status = handler.get_status()
    level = logging.INFO if status < 400 else logging.WARNING if status < 500 else logging.ERROR
    req = handler.request
    token = request_id.set(handler._headers.get("X-Request-Id", "-"))
    try:
        # the path only: query strings may carry codes or signatures
        logging.getLogger("access").log(
            level,
            "%s %s %d %.1fms",
            req.method,
            req.path,
            status,
            1000.0 * req.request_time(),
        )
    finally:
        request_id.reset(token)
