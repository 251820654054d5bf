"""``PaymentService``: the parts of a payment put together, and the follow-up over all of them."""

from __future__ import annotations

from typing import Any

from .common import PaymentBase
from .crediting import Crediting
from .micropay import Micropay, check_timing
from .orders import Orders
from .reconcile import Reconcile
from .refunds import Refunds


class PaymentService(Orders, Micropay, Crediting, Refunds, Reconcile, PaymentBase):
    """Electricity payments: JSAPI orders (``orders``), payment codes at terminals
    (``micropay``), crediting exactly once (``crediting``), refunds (``refunds``) and
    reconciliation with WeChat's bill (``reconcile``)."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        check_timing(self.config)  # ConfigError at start-up: the payment-code flow cannot work
