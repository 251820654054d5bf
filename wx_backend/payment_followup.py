"""The payment follow-up: finishes what interrupted requests left behind.

``python -m wx_backend.payment_followup`` runs it alone; with ``WX_EMBEDDED_WORKERS`` the web
process runs it too. Every ``WX_PAY_FOLLOWUP_INTERVAL`` seconds it credits paid orders whose
crediting did not finish, asks WeChat about orders still open when they are due a look
(a mini-program order at least every four intervals and at its expiry, when an unpaid one is
closed; a payment-code order once its terminal request must be over, when an unpaid one is
reversed). Any number of them may run: every step is idempotent and safe to run twice at once.
"""

from __future__ import annotations

import asyncio
import logging

from pymongo.errors import PyMongoError

from . import logs
from .config import Config, ConfigError
from .services.registry import Services
from .signals import run_until_stopped

log = logging.getLogger(__name__)


async def run_forever(payments, interval: float) -> None:
    """Run ``payments.followup_once`` every ``interval`` seconds until cancelled."""
    log.info("payment follow-up started (every %.1f s)", interval)
    while True:
        try:
            counts = await payments.followup_once()
            if any(counts.values()):
                log.info("payment follow-up: %s", counts)
        except PyMongoError as exc:
            log.warning("payment follow-up: database error %s", type(exc).__name__)
        except Exception:
            log.exception("payment follow-up failed")
        await asyncio.sleep(interval)


async def main() -> None:
    try:
        config = Config.from_env()
    except ConfigError as exc:
        raise SystemExit(f"configuration error: {exc}") from None
    logs.setup(config.log_level)
    services = Services.connect(config)
    await run_until_stopped(run_forever(services.payments, config.pay_followup_interval))
    await services.close()


if __name__ == "__main__":
    asyncio.run(main())
