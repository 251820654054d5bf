"""The sandbox application: every module's ``routes``, one shared ``SandboxState``."""

from __future__ import annotations

import importlib
import logging
import os
import pkgutil

import tornado.web

from .. import logs
from ..config import Config
from ..signals import stop_requested
from ..wechat.pay_keys import ensure_dev_keys
from .state import SandboxState

log = logging.getLogger(__name__)

_NOT_ROUTES = {"app", "base", "state", "__main__"}


def make_app(config: Config, **state_options) -> tornado.web.Application:
    routes: list = []
    package = importlib.import_module(__package__)
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        if info.name in _NOT_ROUTES:
            continue
        routes.extend(importlib.import_module(f"{__package__}.{info.name}").routes)
    ensure_dev_keys(config)  # dev and test: the WeChat Pay v3 key pairs, made once when missing
    state = SandboxState.from_config(config, **state_options)
    return tornado.web.Application(routes, state=state, log_function=_log_request)


def _log_request(handler: tornado.web.RequestHandler) -> None:
    # the path only: WeChat's query strings carry secrets and access tokens
    req = handler.request
    logging.getLogger("sandbox.access").info(
        "%d %s %s %.1fms", handler.get_status(), req.method, req.path, 1000.0 * req.request_time(),
    )


async def main() -> None:
    config = Config.from_env()
    logs.setup(config.log_level)
    delay = float(os.environ.get("WX_SANDBOX_TIMEOUT_DELAY", "10"))
    app = make_app(config, timeout_delay=delay)
    server = app.listen(config.sandbox_port, address=config.bind)
    log.info("WeChat sandbox listening on http://%s:%d", config.bind, config.sandbox_port)
    await stop_requested()
    server.stop()
