"""Checking a submitted form against its business type: each value by its declared field
type, conditions between fields, every error at once with a Chinese message."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from ...validators import (
    MESSAGES,
    has_control_characters,
    is_credit_code,
    is_mobile,
    is_resident_id,
    matches,
    parse_day,
)
from ..periods import SHANGHAI, add_months, period_of

if TYPE_CHECKING:
    from .model import ServiceType


_MONTH = re.compile(r"([0-9]{4})-([0-9]{2})", re.ASCII)
_GENERIC_DOCUMENT = re.compile(r"[0-9A-Za-z()（）-]{5,32}")


# -- validation of values ------------------------------------------------------------


@dataclass
class FormContext:
    today: date
    account: Mapping[str, Any] | None
    clean: dict[str, dict[str, Any]]
    failed: set[str]  # paths of fields whose value was given but refused
    errors: list[dict[str, str]]

    def error(self, path: str, message: str) -> None:
        self.errors.append({"field": path, "message": message})

    def lookup(self, ref: str) -> tuple[bool, Any]:
        """``(known, value)``: known is False when the referenced field itself was refused."""
        sec, _, name = ref.partition(".")
        if ref in self.failed:
            return False, None
        return True, self.clean.get(sec, {}).get(name)

    def holds(self, cond: Mapping[str, Any]) -> bool | None:
        known, value = self.lookup(cond["field"])
        if not known:
            return None
        if "present" in cond:
            return (value is not None) == cond["present"]
        return value in cond["in"]


def blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip()) or value == []


def shanghai_today() -> date:
    return datetime.now(SHANGHAI).date()


def field_label(service: ServiceType, ref: str) -> str:
    sec, _, name = ref.partition(".")
    decl = service.field(sec, name)
    return decl["label"] if decl else ref


def validate_value(
    service: ServiceType, decl: dict[str, Any], section: str, raw: Any, ctx: FormContext
) -> tuple[Any, str | None]:
    label, ftype = decl["label"], decl["type"]
    if ftype in (
        "string",
        "mobile",
        "bank_account",
        "id_number",
        "credit_code",
        "document_no",
        "file",
        "date",
        "month",
    ):
        if not isinstance(raw, str):
            return None, f"{label}格式不正确"
    if ftype == "string":
        raw = raw.strip()  # free text is trimmed; identifiers below must come exact
        if has_control_characters(raw, multiline=True):
            return None, f"{label}含有不允许的字符"
        n = len(raw)
        if n < decl.get("min_length", 0):
            return None, f"{label}不能少于{decl['min_length']}个字"
        if n > decl["max_length"]:
            return None, f"{label}不能超过{decl['max_length']}个字"
        if "pattern" in decl and not re.fullmatch(decl["pattern"], raw, re.ASCII):
            return None, decl.get("pattern_message") or f"{label}格式不正确"
        return raw, None
    if ftype == "integer":
        if isinstance(raw, bool) or not (isinstance(raw, int) or matches("integer", raw)):
            return None, f"{label}须为整数"
        value, unit = int(raw), decl.get("unit", "")
        if "min" in decl and value < decl["min"]:
            return None, f"{label}不能小于{decl['min']}{unit}"
        if "max" in decl and value > decl["max"]:
            return None, f"{label}不能大于{decl['max']}{unit}"
        for key, below in (("min_of_account", True), ("max_of_account", False)):
            rule = decl.get(key)
            base = (ctx.account or {}).get(rule["key"]) if rule else None
            if rule and isinstance(base, int) and not isinstance(base, bool):
                limit = base * rule["percent"] / 100
                bound = math.ceil(limit) if below else math.floor(limit)
                if (value < bound) if below else (value > bound):
                    word = "不能低于" if below else "不能超过"
                    pct = "" if rule["percent"] == 100 else f"的{rule['percent']}%"
                    return None, f"{label}{word}{rule['label']}（{base}{unit}）{pct}，即{bound}{unit}"
        return value, None
    if ftype == "date":
        value = parse_day(raw)
        if value is None:
            return None, f"{label}须为日期（年-月-日）"
        if "min_days" in decl and value < ctx.today + timedelta(days=decl["min_days"]):
            return None, f"{label}不能早于{(ctx.today + timedelta(days=decl['min_days'])).isoformat()}"
        if "max_days" in decl and value > ctx.today + timedelta(days=decl["max_days"]):
            return None, f"{label}不能晚于{(ctx.today + timedelta(days=decl['max_days'])).isoformat()}"
        if "after" in decl:
            known, other = ctx.lookup(f"{section}.{decl['after']}")
            if known and other is not None:
                start = date.fromisoformat(other)
                other_label = field_label(service, f"{section}.{decl['after']}")
                gap = (value - start).days
                lo = decl.get("min_gap_days", 1)
                if gap < lo:
                    return None, f"{label}须比{other_label}至少晚{lo}天"
                if "max_gap_days" in decl and gap > decl["max_gap_days"]:
                    return None, f"{label}与{other_label}相隔不能超过{decl['max_gap_days']}天"
        return value.isoformat(), None
    if ftype == "month":
        m = _MONTH.fullmatch(raw)
        if not m or not 1 <= int(m.group(2)) <= 12:
            return None, f"{label}须为月份（年-月）"
        value = f"{int(m.group(1)):04d}-{int(m.group(2)):02d}"
        for key, earliest in (("min_months", True), ("max_months", False)):
            if key in decl:
                limit = add_months(period_of(ctx.today), decl[key])
                if (value < limit) if earliest else (value > limit):
                    return None, f"{label}不能{'早' if earliest else '晚'}于{limit}"
        return value, None
    if ftype == "select":
        for opt in decl["options"]:
            if raw == opt["value"] or (
                isinstance(opt["value"], int) and isinstance(raw, str) and raw == str(opt["value"])
            ):
                if "when" in opt and ctx.holds(opt["when"]) is False:
                    other = field_label(service, opt["when"]["field"])
                    return None, f"{label}“{opt['label']}”与所选{other}不符"
                return opt["value"], None
        return None, f"请选择有效的{label}"
    if ftype == "boolean":
        if not isinstance(raw, bool):
            return None, f"{label}须为是或否"
        if "must_be" in decl and raw is not decl["must_be"]:
            return None, f"请确认{label}"
        return raw, None
    if ftype == "id_number":
        if not is_resident_id(raw, ctx.today):
            return None, label + MESSAGES["resident_id"]
        return raw.upper(), None
    if ftype == "credit_code":
        if not is_credit_code(raw):
            return None, label + MESSAGES["credit_code"]
        return raw.upper(), None
    if ftype == "mobile":
        if not is_mobile(raw):
            return None, f"{label}不是有效的手机号码"
        return raw, None
    if ftype == "bank_account":
        compact = raw.replace(" ", "")
        if not matches("bank_account", compact):
            return None, f"{label}须为8至32位数字"
        return compact, None
    if ftype == "document_no":
        raw = raw.upper()
        ref = f"{section}.{decl['kind_field']}"
        known, kind = ctx.lookup(ref)
        kind_decl = service.field(section, decl["kind_field"])
        option = next((o for o in kind_decl["options"] if o["value"] == kind), None) if known else None
        fmt = option.get("format") if option else None
        if fmt == "id_number":
            if not is_resident_id(raw, ctx.today):
                return None, label + MESSAGES["resident_id"]
            return raw, None
        if fmt == "credit_code":
            if not is_credit_code(raw):
                return None, label + MESSAGES["credit_code"]
            return raw, None
        pattern = option.get("pattern") if option else None
        if not re.fullmatch(pattern or _GENERIC_DOCUMENT.pattern, raw, re.ASCII):
            return None, f"{label}格式不正确"
        return raw, None
    if ftype == "file":
        if not matches("object_id", raw):
            return None, f"{label}文件无效，请重新上传"
        return raw, None
    raise AssertionError(ftype)  # the loader admits only known types
