"""Electricity payments (用电交费): mini-program JSAPI and payment code at service-hall terminals.

One module per concept: ``orders`` (JSAPI orders and WeChat's notifications), ``micropay``
(payment code at the terminal), ``crediting`` (the single home of crediting exactly once,
and the follow-up), ``refunds``, ``reconcile``; ``common`` holds what they share.
"""

from .common import INDEXES, check_amount, fen_text, new_trade_no, yuan_to_fen
from .reconcile import parse_bill
from .service import PaymentService

__all__ = ["INDEXES", "PaymentService", "check_amount", "fen_text", "new_trade_no", "parse_bill", "yuan_to_fen"]
