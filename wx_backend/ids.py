"""Check digits of Chinese identity numbers (the shapes are checked in ``wx_backend.validators``).

- Resident identity number (居民身份证号码), GB 11643-1999: 6-digit region, 8-digit birth
  date, 3-digit sequence, and an ISO 7064 MOD 11-2 check character (0-9 or X).
- Unified social credit code (统一社会信用代码), GB 32100-2015: 18 characters from a
  31-character set (digits and capitals without I, O, Z, S, V), the last a MOD 31 check.
"""

from __future__ import annotations

_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"  # indexed by (weighted sum mod 11)

_USCC_CHARSET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
_USCC_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)


def resident_id_check(first17: str) -> str:
    """The check character of a resident ID number given its first 17 digits."""
    total = sum(int(d) * w for d, w in zip(first17, _ID_WEIGHTS, strict=True))
    return _ID_CHECK[total % 11]


def credit_code_check(first17: str) -> str:
    """The check character of a unified social credit code given its first 17 characters."""
    total = sum(_USCC_CHARSET.index(c) * w for c, w in zip(first17, _USCC_WEIGHTS, strict=True))
    return _USCC_CHARSET[(31 - total % 31) % 31]
