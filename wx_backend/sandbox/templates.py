"""The templates WeChat knows for our two apps, and WeChat's keyword rules, as WeChat states them.

This is the sandbox's own copy, written from the MP console and WeChat's documentation
(订阅消息参数值内容限制; the official account's category templates check the same types):
it never reads the backend's message catalogue, so a catalogue that drifts from what WeChat
accepts fails here the way it would fail in production (errcode 47003).

A keyword's name is its type followed by a number (``thing2``, ``character_string1``), as
WeChat names them. The rules:

==================  ===========================================================================
type                accepted value
==================  ===========================================================================
thing               20 characters or fewer (Chinese, digits, letters, symbols)
number              32 or fewer digits, may carry a decimal point
letter              32 or fewer letters
symbol              5 or fewer symbols
character_string    32 or fewer digits, letters or symbols (ASCII)
time                24-hour time (HH:MM or HH:MM:SS), optionally after a date; ``~`` joins a range
date                a date (y年m月d日, y年m月, m月d日, or joined by ``-``, ``/``, ``.``), optionally
                    followed by a time; ``~`` joins a range
amount              one optional currency sign, 10 or fewer digits, optional decimals, optional 元
phone_number        17 or fewer digits and symbols
car_number          8 or fewer: first and last may be Chinese, the rest letters or digits
name                10 or fewer Chinese characters, or 20 or fewer letters/symbols
phrase              5 or fewer Chinese characters
==================  ===========================================================================

Symbols are ASCII punctuation; no value may hold control characters (newlines included).
"""

from __future__ import annotations

import re

from .base import SandboxHandler

_HAN = r"\u3400-\u4dbf\u4e00-\u9fff"
_SYMBOL = r"!-/:-@\[-`{-~"  # ASCII punctuation
_CLOCK = r"([01]?\d|2[0-3]):[0-5]\d(:[0-5]\d)?"
_DAY = (
    r"(\d{4}年\d{1,2}月(\d{1,2}日)?|\d{1,2}月\d{1,2}日"
    r"|\d{4}[-/.]\d{1,2}([-/.]\d{1,2})?|\d{1,2}[-/.]\d{1,2})"
)
_TIME_POINT = rf"({_DAY}\s*)?{_CLOCK}"
_DATE_POINT = rf"{_DAY}(\s*{_CLOCK})?"


def _range(point: str) -> re.Pattern[str]:
    return re.compile(rf"{point}(\s*~\s*{point})?")


RULES: dict[str, re.Pattern[str]] = {
    "thing": re.compile(r"[^\x00-\x1f\x7f]{1,20}"),
    "number": re.compile(r"(?=[\d.]{1,32}$)\d+(\.\d+)?"),
    "letter": re.compile(r"[A-Za-z]{1,32}"),
    "symbol": re.compile(rf"[{_SYMBOL}]{{1,5}}"),
    "character_string": re.compile(rf"[0-9A-Za-z{_SYMBOL}]{{1,32}}"),
    "time": _range(_TIME_POINT),
    "date": _range(_DATE_POINT),
    "amount": re.compile(r"[¥$€£]?\d{1,10}(\.\d{1,2})?元?"),
    "phone_number": re.compile(rf"[0-9{_SYMBOL}]{{1,17}}"),
    "car_number": re.compile(rf"(?=.{{1,8}}$)[{_HAN}0-9A-Za-z][0-9A-Za-z]*[{_HAN}0-9A-Za-z]?"),
    "name": re.compile(rf"[{_HAN}]{{1,10}}|[A-Za-z{_SYMBOL} ]{{1,20}}"),
    "phrase": re.compile(rf"[{_HAN}]{{1,5}}"),
}


def keyword_type(keyword: str) -> str:
    return keyword.rstrip("0123456789")


def valid(keyword: str, value: object) -> bool:
    """Whether WeChat accepts ``value`` for ``keyword`` (its type from its name)."""
    rule = RULES.get(keyword_type(keyword))
    return rule is not None and isinstance(value, str) and rule.fullmatch(value) is not None


# The templates added to the two apps in the MP console (development and test ids):
# template_id -> its keywords, in order.
SUBSCRIBE_TEMPLATES: dict[str, tuple[str, ...]] = {
    "mpTplContractReady0000000000000000000000001": ("character_string1", "thing2", "phrase3"),
    "mpTplStageChanged00000000000000000000000002": ("character_string1", "thing2", "thing3"),
    "mpTplBillIssued0000000000000000000000000003": ("character_string1", "thing2", "amount3", "date4"),
    "mpTplOutageNotice000000000000000000000000004": ("thing1", "time2", "time3", "thing4"),
    "mpTplPaymentReceived00000000000000000000005": ("character_string1", "amount2", "time3"),
    "mpTplApplicationReceived000000000000000006": ("character_string1", "thing2", "time3"),
    "mpTplOutageUpdated00000000000000000000000006": ("thing1", "time2", "time3", "thing4"),
    "mpTplOutageCancelled000000000000000000000007": ("thing1", "time2", "time3", "thing4"),
    "mpTplLowBalance0000000000000000000000000008": ("character_string1", "amount2", "thing3"),
    "mpTplOverdueReminder00000000000000000000009": ("character_string1", "thing2", "amount3", "date4"),
    "mpTplCutoffWarning0000000000000000000000010": ("character_string1", "thing2", "thing3"),
    "mpTplSupplyRestored000000000000000000000011": ("character_string1", "time2", "phrase3"),
    "mpTplInvoiceIssued0000000000000000000000012": ("character_string1", "amount2", "phrase3"),
    "mpTplInvoiceRefused000000000000000000000013": ("character_string1", "amount2", "thing3"),
}
TEMPLATE_MESSAGE_TEMPLATES: dict[str, tuple[str, ...]] = {
    "oaTplContractReady0000000000000000000000001": ("character_string1", "thing2", "thing3"),
    "oaTplStageChanged00000000000000000000000002": ("character_string1", "thing2", "thing3"),
    "oaTplBillIssued0000000000000000000000000003": ("character_string1", "thing2", "amount3", "date4"),
    "oaTplOutageNotice000000000000000000000000004": ("thing1", "time2", "time3", "thing4"),
    "oaTplPaymentReceived00000000000000000000005": ("character_string1", "amount2", "time3"),
    "oaTplApplicationReceived000000000000000006": ("character_string1", "thing2", "time3"),
    "oaTplOutageUpdated00000000000000000000000006": ("thing1", "time2", "time3", "thing4"),
    "oaTplOutageCancelled000000000000000000000007": ("thing1", "time2", "time3", "thing4"),
    "oaTplLowBalance0000000000000000000000000008": ("character_string1", "amount2", "thing3", "time4"),
    "oaTplOverdueReminder00000000000000000000009": ("character_string1", "thing2", "amount3", "date4"),
    "oaTplCutoffWarning0000000000000000000000010": ("character_string1", "thing2", "time3", "thing4"),
    "oaTplSupplyRestored000000000000000000000011": ("character_string1", "time2", "thing3"),
    "oaTplInvoiceIssued0000000000000000000000012": ("character_string1", "character_string2", "amount3", "thing4"),
    "oaTplInvoiceRefused000000000000000000000013": ("character_string1", "amount2", "thing3"),
}


def check_data(keywords: tuple[str, ...], data: object) -> str | None:
    """The first keyword WeChat would refuse (``data.<keyword>.value``), or ``None``."""
    if not isinstance(data, dict):
        return "data"
    for keyword in keywords:
        entry = data.get(keyword)
        value = entry.get("value") if isinstance(entry, dict) else None
        if not valid(keyword, value):
            return f"data.{keyword}.value"
    return None


class TemplatesHandler(SandboxHandler):
    """``GET /sandbox/templates``: the template ids and keywords the sandbox knows, per channel."""

    async def get(self) -> None:
        self.write_json(
            {
                "subscribe": {k: list(v) for k, v in SUBSCRIBE_TEMPLATES.items()},
                "official_account": {k: list(v) for k, v in TEMPLATE_MESSAGE_TEMPLATES.items()},
            }
        )


routes = [(r"/sandbox/templates", TemplatesHandler)]
