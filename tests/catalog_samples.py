"""Submissions generated from a served form schema (``GET /api/v1/services/{code}``).

Nothing here knows a particular business type: it reads the field types, rules, conditions
and attachments of the schema, so a new type in the catalogue is covered by the tests that
use these helpers without any change. Check digits are computed here from the standards'
weights, independently of ``wx_backend.ids``.

- ``valid_submission(schema, ...)`` -> a submission that must pass validation
- ``invalid_submission(schema)`` -> ``(submission, paths)``: every field and attachment broken,
  and the set of paths that must each get an error
- ``eligible_case(schema)`` / ``ineligible_cases(schema)`` -> ``(account, form)`` pairs
"""

from __future__ import annotations

import math
from datetime import date, timedelta
from typing import Any

from conftest import register_secret

ID_WEIGHTS = [2 ** (17 - i) % 11 for i in range(17)]  # GB 11643: W_i = 2^(i-1) mod 11, i = 18..2
ID_CHECK = "10X98765432"
USCC_CHARS = "0123456789ABCDEFGHJKLMNPQRTUWXY"
USCC_WEIGHTS = [3**i % 31 for i in range(17)]  # GB 32100: W_i = 3^(i-1) mod 31

FAKE_FILE_ID = "5f0c1a2b3c4d5e6f70818293"
SAMPLE_CAPACITY_KVA = 630


def resident_id(first17: str = "41042519850307123") -> str:
    return register_secret(first17 + ID_CHECK[sum(int(d) * w for d, w in zip(first17, ID_WEIGHTS, strict=True)) % 11])


def credit_code(first17: str = "91410425MA44XKQ0D") -> str:
    total = sum(USCC_CHARS.index(c) * w for c, w in zip(first17, USCC_WEIGHTS, strict=True))
    return first17 + USCC_CHARS[(31 - total % 31) % 31]


def wrong_check(valid: str, charset: str) -> str:
    """The same number with another check character."""
    alternatives = [c for c in charset if c != valid[-1]]
    return valid[:-1] + alternatives[0]


def _holds(cond: dict[str, Any], values: dict[str, dict[str, Any]]) -> bool:
    section, _, name = cond["field"].partition(".")
    value = values.get(section, {}).get(name)
    if "present" in cond:
        return (value is not None) == cond["present"]
    return value in cond["in"]


def _add_months(d: date, n: int) -> str:
    index = d.year * 12 + d.month - 1 + n
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


def _valid_value(
    field: dict[str, Any],
    section: str,
    values: dict[str, dict[str, Any]],
    account: dict[str, Any] | None,
    today: date,
    file_id: str,
) -> Any:
    ftype = field["type"]
    mine = values[section]
    if ftype == "string":
        if "example" in field:
            return field["example"]
        n = max(field.get("min_length", 0), min(field["max_length"], 6))
        return ("申请资料齐全请办理" * 40)[:n]
    if ftype == "integer":
        lo, hi = field.get("min", 0), field.get("max", 10**9)
        capacity = (account or {}).get("capacity_kva")
        if capacity is not None and "min_of_account" in field:
            lo = max(lo, math.ceil(capacity * field["min_of_account"]["percent"] / 100))
        if capacity is not None and "max_of_account" in field:
            hi = min(hi, math.floor(capacity * field["max_of_account"]["percent"] / 100))
        assert lo <= hi, f"{field['path']}: no valid integer for this account"
        return lo
    if ftype == "date":
        if "after" in field:
            start = date.fromisoformat(mine[field["after"]])
            return (start + timedelta(days=field.get("min_gap_days", 1))).isoformat()
        return (today + timedelta(days=max(field.get("min_days", 0), 0))).isoformat()
    if ftype == "month":
        return _add_months(today, max(field.get("min_months", 0), 0))
    if ftype == "select":
        for option in field["options"]:
            if "when" not in option or _holds(option["when"], values):
                return option["value"]
        raise AssertionError(f"{field['path']}: no option available")
    if ftype == "boolean":
        return field.get("must_be", True)
    if ftype == "id_number":
        return resident_id()
    if ftype == "credit_code":
        return credit_code()
    if ftype == "mobile":
        return "13912345678"
    if ftype == "bank_account":
        return "6222020200112233445"
    if ftype == "document_no":
        kind = mine.get(field["kind_field"])
        kind_field = next(f for f in _fields_of(values["_schema"], section) if f["name"] == field["kind_field"])
        option = next(o for o in kind_field["options"] if o["value"] == kind)
        return resident_id() if option.get("format") == "id_number" else credit_code()
    if ftype == "file":
        return file_id
    raise AssertionError(f"unknown field type {ftype}")


def _fields_of(schema: dict[str, Any], section: str) -> list[dict[str, Any]]:
    return schema[section]["fields"]


def _document_choice(field: dict[str, Any]) -> Any:
    """For an identity-document select, prefer an option whose number has a check digit."""
    for option in field["options"]:
        if option.get("format") and "when" not in option:
            return option["value"]
    return None


def valid_submission(
    schema: dict[str, Any],
    *,
    choose: dict[str, Any] | None = None,
    account: dict[str, Any] | None = None,
    today: date | None = None,
    file_id: str = FAKE_FILE_ID,
    optional: bool = True,
) -> dict[str, Any]:
    """A submission that passes validation: every applicable field, every applicable attachment.

    ``choose`` fixes select values by path (``{"applicant.identity": "agent"}``); ``account``
    is the one the rules relative to the account read (its ``capacity_kva``); ``file_id`` is
    put wherever an upload is referenced; ``optional=False`` leaves optional fields out.
    """
    choose = choose or {}
    today = today or date.today()
    account = account if account is not None else sample_account(schema)
    values: dict[str, Any] = {"applicant": {}, "form": {}, "_schema": schema}
    document_kinds = {
        f["kind_field"] for s in ("applicant", "form") for f in _fields_of(schema, s) if f["type"] == "document_no"
    }
    for section in ("applicant", "form"):
        for field in _fields_of(schema, section):
            cond = field.get("required_when")
            if cond and not _holds(cond, values):
                continue
            if not field["required"] and not optional and field["path"] not in choose:
                continue
            if field["path"] in choose:
                value = choose[field["path"]]
            elif field["name"] in document_kinds and _document_choice(field) is not None:
                value = _document_choice(field)
            else:
                value = _valid_value(field, section, values, account, today, file_id)
            values[section][field["name"]] = value
    attachments = {}
    for att in schema["attachments"]:
        cond = att.get("required_when")
        if cond and not _holds(cond, values):
            continue
        if not att["required"] and not optional:
            continue
        attachments[att["kind"]] = [file_id]
    return {"applicant": values["applicant"], "form": values["form"], "attachments": attachments}


def _invalid_value(field: dict[str, Any]) -> Any:
    ftype = field["type"]
    if ftype == "string":
        return "长" * (field["max_length"] + 1)
    return {
        "integer": "十二",
        "date": "2026-02-30",
        "month": "2026-13",
        "select": "__no_such_option__",
        "boolean": "maybe",
        "id_number": wrong_check(resident_id(), ID_CHECK),
        "credit_code": wrong_check(credit_code(), USCC_CHARS),
        "mobile": "1234567",
        "bank_account": "账号",
        "document_no": "!!",
        "file": "not-an-upload",
    }[ftype]


def invalid_submission(schema: dict[str, Any]) -> tuple[dict[str, Any], set[str]]:
    """Every field and attachment given a wrong value, plus an unknown field and attachment.

    Returns the submission and the paths that must each get exactly one error.
    """
    submission: dict[str, Any] = {"applicant": {}, "form": {}, "attachments": {}}
    paths = set()
    for section in ("applicant", "form"):
        for field in _fields_of(schema, section):
            submission[section][field["name"]] = _invalid_value(field)
            paths.add(field["path"])
    for att in schema["attachments"]:
        submission["attachments"][att["kind"]] = ["not-an-upload"]
        paths.add(f"attachments.{att['kind']}")
    submission["form"]["no_such_field"] = "x"
    submission["attachments"]["no_such_attachment"] = [FAKE_FILE_ID]
    paths |= {"form.no_such_field", "attachments.no_such_attachment"}
    return submission, paths


def sample_account(schema: dict[str, Any]) -> dict[str, Any] | None:
    """An account that may apply (None for types that need no account)."""
    elig = schema["eligibility"]
    if not elig["requires_account"]:
        return None
    return {
        "account_no": "5263900099",
        "customer_class": elig["customer_classes"][0],
        "tariff": {t["flag"]: t["required"] for t in elig["tariff"]},
        "capacity_kva": SAMPLE_CAPACITY_KVA,
    }


def eligible_case(schema: dict[str, Any]) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """``(account, form)`` of a customer who may apply."""
    elig = schema["eligibility"]
    if elig["requires_account"]:
        return sample_account(schema), None
    form = {}
    if elig["class_field"]:
        form[elig["class_field"].split(".", 1)[1]] = elig["customer_classes"][0]
    return None, form


CLASSES = ["低压居民", "低压非居民", "高压"]


def ineligible_cases(schema: dict[str, Any]) -> list[tuple[dict[str, Any] | None, dict[str, Any] | None]]:
    """``(account, form)`` pairs that must be refused: a class not admitted, a tariff condition
    not met, no bound account."""
    elig = schema["eligibility"]
    others = [c for c in CLASSES if c not in elig["customer_classes"]]
    cases: list[tuple[dict[str, Any] | None, dict[str, Any] | None]] = []
    if elig["requires_account"]:
        base = sample_account(schema)
        cases.append((None, None))
        for cls in others:
            cases.append(({**base, "customer_class": cls}, None))
        for tariff in elig["tariff"]:
            cases.append(({**base, "tariff": {**base["tariff"], tariff["flag"]: not tariff["required"]}}, None))
    elif elig["class_field"]:
        name = elig["class_field"].split(".", 1)[1]
        for cls in others:
            cases.append((None, {name: cls}))
    return cases
