"""Identifiers and formats: one strict check for each, used by every caller.

Every identifier the service accepts from outside (account number, mobile, period, year, day,
ID number, unified social credit code, payment code, application and contract numbers, order
and refund references, SMS codes, amounts, timestamps) is checked here and nowhere else.

The rules are strict on purpose:

- ASCII digits only. ``str.isdigit()`` and a ``\\d`` without ``re.ASCII`` accept every Unicode
  digit (full-width ``２０２６``, Arabic-Indic, ...): such a value passes a shape check and then
  compares unequal to the ASCII value everywhere else. Patterns here are compiled with
  ``re.ASCII`` and spell ``[0-9]``.
- The whole value: ``fullmatch``, never ``match`` with ``$`` (which also matches before a final
  ``\\n``). No surrounding whitespace is stripped or tolerated: ``"5299000055\\n"`` is refused,
  not stored beside ``"5299000055"``.
- Only ``str`` (or ``int`` for amounts, never ``bool``); anything else is refused, not coerced.

Free text (names, addresses, reasons) is checked by ``check_text``: no control characters
(``NUL`` and the rest of Unicode category Cc, except a newline where a field allows several
lines), no unpaired surrogates, a length limit.

The Chinese messages live here, once each (``MESSAGES``), so a field is described the same way
wherever it is refused.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import UTC, date, datetime
from typing import Any

from .errors import ValidationFailed
from .ids import credit_code_check, resident_id_check

MIN_YEAR, MAX_YEAR = 2000, 2099
MAX_AMOUNT_FEN = 10**10  # 1 亿元: above any single bill or payment


def _p(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.ASCII)


PATTERNS: dict[str, re.Pattern[str]] = {
    "account_no": _p(r"[0-9]{10}"),
    "mobile": _p(r"1[3-9][0-9]{9}"),
    "sms_code": _p(r"[0-9]{6}"),
    "year": _p(r"[0-9]{4}"),
    "period": _p(r"([0-9]{4})-(0[1-9]|1[0-2])"),
    "day": _p(r"([0-9]{4})-([0-9]{2})-([0-9]{2})"),
    "resident_id": _p(r"[1-9][0-9]{16}[0-9X]"),
    "credit_code": _p(r"[0-9A-HJ-NPQRTUWXY]{2}[0-9]{6}[0-9A-HJ-NPQRTUWXY]{10}"),
    "payment_code": _p(r"1[0-5][0-9]{16}"),
    "app_no": _p(r"[0-9]{14}"),
    "app_no_prefix": _p(r"[0-9]{1,14}"),  # operations staff search by the start of a number
    "out_trade_no": _p(r"[A-Za-z0-9_-]{1,32}"),
    "refund_no": _p(r"[A-Za-z0-9_-]{1,64}"),
    "idempotency_key": _p(r"[A-Za-z0-9._:-]{8,64}"),
    "object_id": _p(r"[0-9a-f]{24}"),
    "bank_account": _p(r"[0-9]{8,32}"),
    "meter_no": _p(r"[0-9A-Z]{6,32}"),  # the asset number printed under the meter's barcode
    "integer": _p(r"-?[0-9]{1,12}"),
    "ref": _p(r"[A-Za-z0-9._:-]{1,64}"),
    "code_name": _p(r"[a-z][a-z0-9_]{1,39}"),  # catalogue codes, attachment kinds
    "terminal_id": _p(r"[A-Za-z0-9_-]{2,32}"),
    "timestamp": _p(r"[0-9]{1,12}"),  # Unix seconds of a signed request
    "nonce": _p(r"[A-Za-z0-9._~-]{8,64}"),
    "signature": _p(r"[0-9a-f]{64}"),  # hex HMAC-SHA256
}

MESSAGES = {
    "account_no": "户号应为 10 位数字",
    "mobile": "请输入 11 位手机号码",
    "sms_code": "请输入 6 位数字验证码",
    "year": "年份应为 4 位数字，如 2026",
    "period": "月份应为 YYYY-MM，如 2026-01",
    "day": "日期应为 YYYY-MM-DD，如 2026-01-31",
    "resident_id": "不是有效的居民身份证号码",
    "credit_code": "不是有效的统一社会信用代码",
    "payment_code": "付款码应为 10 至 15 开头的 18 位数字",
    "app_no": "申请编号应为 14 位数字",
    "out_trade_no": "订单号应为 1 至 32 位字母、数字、下划线或连字符",
    "refund_no": "退款单号应为 1 至 64 位字母、数字、下划线或连字符",
    "idempotency_key": "Idempotency-Key 应为 8 至 64 位字母、数字或 ._:-",
    "object_id": "编号无效",
    "bank_account": "银行账号应为 8 至 32 位数字",
    "meter_no": "电能表资产编号应为 6 至 32 位数字或大写字母",
    "integer": "应为整数",
    "ref": "编号应为 1 至 64 位字母、数字或 ._:-",
    "amount_fen": "金额应为正整数（分）",
    "datetime": "应为带时区的 ISO 8601 时间，如 2026-11-28T08:00:00+08:00",
    "text": "含有不允许的字符",
}


def matches(kind: str, value: Any) -> bool:
    """``value`` is a ``str`` whose whole text has the shape of ``kind`` (ASCII only)."""
    return isinstance(value, str) and PATTERNS[kind].fullmatch(value) is not None


def field_error(field: str, kind: str, message: str | None = None) -> dict[str, str]:
    return {"field": field, "message": message or MESSAGES[kind]}


def check(kind: str, value: Any, field: str | None = None, message: str | None = None) -> str:
    """``value`` if it has the shape of ``kind``, else ``ValidationFailed`` (422) naming ``field``."""
    if not matches(kind, value):
        raise ValidationFailed(details=[field_error(field or kind, kind, message)])
    return value


# -- identifiers ---------------------------------------------------------------------------


def is_account_no(value: Any) -> bool:
    return matches("account_no", value)


def is_mobile(value: Any) -> bool:
    return matches("mobile", value)


def is_sms_code(value: Any) -> bool:
    return matches("sms_code", value)


def is_meter_no(value: Any) -> bool:
    return matches("meter_no", value)


def is_year(value: Any) -> bool:
    return matches("year", value) and MIN_YEAR <= int(value) <= MAX_YEAR


def is_period(value: Any) -> bool:
    """``YYYY-MM`` with ASCII digits, a year in ``MIN_YEAR..MAX_YEAR``."""
    return matches("period", value) and MIN_YEAR <= int(value[:4]) <= MAX_YEAR


def is_day(value: Any) -> bool:
    """``YYYY-MM-DD``, a real calendar day, a year in ``MIN_YEAR..MAX_YEAR``."""
    return parse_day(value) is not None and MIN_YEAR <= int(value[:4]) <= MAX_YEAR


def parse_day(value: Any) -> date | None:
    """A calendar day written ``YYYY-MM-DD`` in ASCII digits (any year), or None."""
    if not matches("day", value):
        return None
    try:
        return date(int(value[:4]), int(value[5:7]), int(value[8:10]))
    except ValueError:
        return None


def is_resident_id(value: Any, today: date | None = None) -> bool:
    """An 18-character resident ID number (GB 11643): shape, a real birth date not in the future,
    the check character. A lower-case ``x`` is accepted for the check character."""
    if not isinstance(value, str):
        return False
    value = value.upper()
    if not matches("resident_id", value):
        return False
    try:
        born = date(int(value[6:10]), int(value[10:12]), int(value[12:14]))
    except ValueError:
        return False
    if born.year < 1900 or born > (today or date.today()):
        return False
    return resident_id_check(value[:17]) == value[17]


def is_credit_code(value: Any) -> bool:
    """An 18-character unified social credit code (GB 32100) with a correct check character."""
    if not isinstance(value, str):
        return False
    value = value.upper()
    return matches("credit_code", value) and credit_code_check(value[:17]) == value[17]


def is_payment_code(value: Any) -> bool:
    """A WeChat payment code (付款码) as scanned: 18 digits starting 10 to 15."""
    return matches("payment_code", value)


def is_amount_fen(value: Any, maximum: int = MAX_AMOUNT_FEN) -> bool:
    """A positive whole number of fen (an ``int``, not a ``bool`` nor a float or a string)."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value <= maximum


def parse_datetime(value: Any) -> datetime | None:
    """An ISO 8601 time with a UTC offset and a year in ``MIN_YEAR..MAX_YEAR``, as UTC; else None.

    A time without an offset is refused: whose local time it would be is a guess.
    """
    if not isinstance(value, str) or not 10 <= len(value) <= 40 or not value.isascii():
        return None
    if not matches("year", value[:4]) or value != value.strip():
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None or not MIN_YEAR <= parsed.year <= MAX_YEAR:
        return None
    return parsed.astimezone(UTC)


# -- free text -----------------------------------------------------------------------------


def has_control_characters(value: str, multiline: bool = False) -> bool:
    """Control characters (Cc: NUL, escapes, DEL...) or unpaired surrogates (Cs) in ``value``."""
    for ch in value:
        if multiline and ch in "\n\t":
            continue
        if unicodedata.category(ch) in ("Cc", "Cs"):
            return True
    return False


def clean_text(value: Any, limit: int, multiline: bool = False) -> tuple[str | None, str | None]:
    """Free text, trimmed: ``(text, None)``, or ``(None, message)`` when missing, too long or
    holding control characters."""
    if not isinstance(value, str) or not value.strip():
        return None, "必填"
    text = value.strip()
    if len(text) > limit:
        return None, f"不能超过 {limit} 个字"
    if has_control_characters(text, multiline):
        return None, MESSAGES["text"]
    return text, None
