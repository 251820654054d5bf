"""WeChat Pay API v2: orders, payment codes, reversal, refunds, bills and payment notifications.

Every call is a POST of an XML body signed with the merchant's API key (MD5, or HMAC-SHA256
when ``sign_type`` says so). ``model`` holds what WeChat Pay knows (orders, payment codes,
notifications), ``endpoints`` the signed-XML handler and the order calls, ``refunds`` and
``bills`` their endpoints. See ``docs/payments-protocol.md``.
"""

from .bills import DownloadBillHandler, bill
from .endpoints import (
    CloseOrderHandler,
    MicropayHandler,
    OrderQueryHandler,
    PayFail,
    PayHandler,
    ReturnFail,
    ReverseHandler,
    UnifiedOrderHandler,
)
from .model import (
    BEHAVIOURS,
    NOTIFIERS,
    SHANGHAI,
    AuthCode,
    Order,
    PayState,
    Refund,
    parse_xml,
    pay_signature,
    to_xml,
    verify_pay_signature,
    wechat_time,
)
from .refunds import RefundHandler, RefundQueryHandler

__all__ = [
    "BEHAVIOURS",
    "NOTIFIERS",
    "SHANGHAI",
    "AuthCode",
    "CloseOrderHandler",
    "DownloadBillHandler",
    "MicropayHandler",
    "Order",
    "OrderQueryHandler",
    "PayFail",
    "PayHandler",
    "PayState",
    "Refund",
    "RefundHandler",
    "RefundQueryHandler",
    "ReturnFail",
    "ReverseHandler",
    "UnifiedOrderHandler",
    "bill",
    "parse_xml",
    "pay_signature",
    "to_xml",
    "verify_pay_signature",
    "wechat_time",
]

routes = [
    (r"/pay/unifiedorder", UnifiedOrderHandler),
    (r"/pay/micropay", MicropayHandler),
    (r"/pay/orderquery", OrderQueryHandler),
    (r"/pay/closeorder", CloseOrderHandler),
    (r"/secapi/pay/reverse", ReverseHandler),
    (r"/secapi/pay/refund", RefundHandler),
    (r"/pay/refundquery", RefundQueryHandler),
    (r"/pay/downloadbill", DownloadBillHandler),
]
