"""The sandbox application: every module's ``routes``, one shared ``SandboxState``."""

from __future__ import annotations

import logging
import os

import tornado.web

from .. import logs
from ..config import Config
from ..signals import stop_requested
from ..wechat.pay_keys import ensure_dev_keys
from . import (
    account_faults,
    auth,
    control,
    oauth,
    official_account,
    pay,
    pay_control,
    pay_v3,
    pay_v3_refunds,
    phone,
    sms,
    subscribe,
    templates,
    tsa,
)
from .state import SandboxState

log = logging.getLogger(__name__)

# every module that answers requests; a new one is added here
ROUTE_MODULES = (
    account_faults,
    auth,
    control,
    oauth,
    official_account,
    pay,
    pay_control,
    pay_v3,
    pay_v3_refunds,
    phone,
    sms,
    subscribe,
    templates,
    tsa,
)


def make_app(config: Config, **state_options) -> tornado.web.Application:
    routes = [route for module in ROUTE_MODULES for route in module.routes]
    ensure_dev_keys(config)  # dev and test: the WeChat Pay v3 key pairs, made once when missing
    state = SandboxState.from_config(config, **state_options)
    return tornado.web.Application(routes, state=state, log_function=_log_request)


def _log_request(handler: tornado.web.RequestHandler) -> None:
    # the path only: WeChat's query strings carry secrets and access tokens
    req = handler.request
    logging.getLogger("sandbox.access").info(
        "%d %s %s %.1fms",
        handler.get_status(),
        req.method,
        req.path,
        1000.0 * req.request_time(),
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
