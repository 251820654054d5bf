"""Check digits of Chinese identity numbers.

- Resident identity number (居民身份证号码), GB 11643-1999: 6-digit region, 8-digit birth
  date, 3-digit sequence, and an ISO 7064 MOD 11-2 check character (0-9 or X).
- Unified social credit code (统一社会信用代码), GB 32100-2015: 18 characters from a
  31-character set (digits and capitals without I, O, Z, S, V), the last a MOD 31 check.
"""

from __future__ import annotations

import re
from datetime import date

_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"  # indexed by (weighted sum mod 11)
_ID_SHAPE = re.compile(r"^[1-9]\d{16}[\dX]$")

_USCC_CHARSET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
_USCC_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)
_USCC_SHAPE = re.compile(r"^[0-9A-HJ-NPQRTUWXY]{2}\d{6}[0-9A-HJ-NPQRTUWXY]{10}$")


def resident_id_check(first17: str) -> str:
    """The check character of a resident ID number given its first 17 digits."""
    total = sum(int(d) * w for d, w in zip(first17, _ID_WEIGHTS, strict=True))
    return _ID_CHECK[total % 11]


def is_resident_id(value: str, today: date | None = None) -> bool:
    """An 18-digit resident ID number: shape, a real birth date not in the future, check digit."""
    if not isinstance(value, str):
        return False
    value = value.upper()
    if not _ID_SHAPE.match(value):
        return False
    try:
        born = date(int(value[6:10]), int(value[10:12]), int(value[12:14]))
    except ValueError:
        return False
    if born.year < 1900 or born > (today or date.today()):
        return False
    return resident_id_check(value[:17]) == value[17]


def credit_code_check(first17: str) -> str:
    """The check character of a unified social credit code given its first 17 characters."""
    total = sum(_USCC_CHARSET.index(c) * w for c, w in zip(first17, _USCC_WEIGHTS, strict=True))
    return _USCC_CHARSET[(31 - total % 31) % 31]


def is_credit_code(value: str) -> bool:
    """An 18-character unified social credit code with a correct check character."""
    if not isinstance(value, str):
        return False
    value = value.upper()
    if not _USCC_SHAPE.match(value):
        return False
    return credit_code_check(value[:17]) == value[17]
