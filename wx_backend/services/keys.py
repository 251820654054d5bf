"""Natural ``_id``s of the documents the customer's queries read most.

An account is stored under its account number, a bill under ``{account_no}:{period}``, a meter
reading under ``{account_no}:{kind}:{key}`` and a session under the hash of its token. A query
then knows the ``_id``s it needs (the periods of a year, the days of a month) and reads each
with an equality on ``_id`` alone: on MongoDB that is the ``_id`` index, and it is the only
lookup FerretDB 1.24 answers from an index at all (every other filter reads the whole
collection; docs/storage.md). The fields inside (``account_no``, ``period``, ...) stay, for
the other queries and for people reading the data.
"""

from __future__ import annotations


def bill_id(account_no: str, period: str) -> str:
    return f"{account_no}:{period}"


def reading_id(account_no: str, kind: str, key: str) -> str:
    """``kind`` is ``day`` (``key`` YYYY-MM-DD) or ``month`` (``key`` YYYY-MM)."""
    return f"{account_no}:{kind}:{key}"
