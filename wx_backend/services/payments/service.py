"""``PaymentService``: the parts of a payment put together, and the follow-up over all of them."""

from __future__ import annotations

from .common import PaymentBase
from .crediting import Crediting
from .micropay import Micropay
from .orders import Orders
from .reconcile import Reconcile
from .refunds import Refunds


class PaymentService(Orders, Micropay, Crediting, Refunds, Reconcile, PaymentBase):
    """Electricity payments: JSAPI orders (``orders``), payment codes at terminals
    (``micropay``), crediting exactly once (``crediting``), refunds (``refunds``) and
    reconciliation with WeChat's bill (``reconcile``)."""
