"""Run one backend process: ``python -m scripts.serve [--port N]``."""

from __future__ import annotations

import argparse
import asyncio
import logging

import handlers
from handlers.base import NotFoundHandler
from wx_backend import logs
from wx_backend.app import Application
from wx_backend.bodies import LARGE_BODY
from wx_backend.config import Config, ConfigError
from wx_backend.signals import stop_requested

log = logging.getLogger("serve")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, help="override WX_PORT")
    args = parser.parse_args()
    try:
        config = Config.from_env(**({"port": args.port} if args.port else {}))
        logs.setup(config.log_level)
        app = Application(config, handlers.routes(), default_handler_class=NotFoundHandler)
    except ConfigError as exc:  # also a malformed catalogue file (CatalogError)
        raise SystemExit(f"configuration error: {exc}") from None
    server = app.listen(config.port, address=config.bind, max_body_size=LARGE_BODY)
    await app.startup()
    log.info("backend listening on http://%s:%d (env %s)", config.bind, config.port, config.env)
    await stop_requested()
    server.stop()
    await app.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
