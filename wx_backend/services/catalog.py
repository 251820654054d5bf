"""The catalogue of power-service applications (用电报装服务), read from data files.

Each business type is one TOML file in ``wx_backend/catalog/`` (and, optionally, in the
folder named by ``WX_CATALOG_DIR``, whose files add types or replace them by code). The
shared applicant block, attachments, customer classes and tariff flags live in
``_common.toml``. Nothing here knows any particular type: adding a type is adding a file.

The files are checked once, at start-up; a malformed file stops the process with a
message naming the file and the field (``CatalogError``). ``docs/catalogue.md`` describes
the format.
"""

from __future__ import annotations

import copy
import math
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from ..config import ConfigError
from ..errors import NotFound
from ..validators import MESSAGES, has_control_characters, is_credit_code, is_mobile, is_resident_id, matches, parse_day
from .periods import add_months, period_of

BUILTIN_DIR = Path(__file__).resolve().parent.parent / "catalog"
COMMON_FILE = "_common.toml"
SHANGHAI = ZoneInfo("Asia/Shanghai")

UPLOAD_TYPES = ("image/jpeg", "image/png", "application/pdf")
SECTIONS = ("applicant", "form")

_CODE = re.compile(r"[a-z][a-z0-9_]{1,39}", re.ASCII)
_MONTH = re.compile(r"([0-9]{4})-([0-9]{2})", re.ASCII)
_GENERIC_DOCUMENT = re.compile(r"[0-9A-Za-z()（）-]{5,32}")


class CatalogError(ConfigError):
    """A catalogue file is malformed; the message names the file and the field."""


class ServiceNotFound(NotFound):
    code = "service_not_found"
    message = "未找到该业务"


class StageNotFound(NotFound):
    code = "stage_not_found"
    message = "未知的工单环节"


# -- the declaration format ----------------------------------------------------------

COMMON_KEYS = {"name", "label", "type", "required", "required_when", "placeholder", "help"}
TYPE_KEYS: dict[str, set[str]] = {
    "string": {"min_length", "max_length", "pattern", "pattern_message", "multiline", "example"},
    "integer": {"min", "max", "unit", "min_of_account", "max_of_account"},
    "date": {"min_days", "max_days", "after", "min_gap_days", "max_gap_days"},
    "month": {"min_months", "max_months"},
    "select": {"options"},
    "boolean": {"must_be"},
    "id_number": set(),
    "credit_code": set(),
    "mobile": set(),
    "bank_account": set(),
    "document_no": {"kind_field"},
    "file": {"accept"},
}
OPTION_KEYS = {"value", "label", "when", "format", "pattern", "kind"}
DOCUMENT_FORMATS = {"id_number", "credit_code"}
# Values a person would not want to see in a log: the applications service encrypts these.
SENSITIVE_TYPES = {"id_number", "document_no", "mobile", "bank_account"}
TYPE_KEYS_TOP = {"code", "name", "description", "entry", "order", "eligibility", "form", "attachments", "stages"}
ELIGIBILITY_KEYS = {"customer_classes", "tariff", "requires_account", "class_field", "applicant_kinds"}
ATTACHMENT_KEYS = {"kind", "label", "required", "required_when", "accept", "max_files", "help"}
STAGE_KEYS = {"code", "name", "next", "customer_action", "action", "description"}
COMMON_TOP = {"customer_classes", "tariff_flags", "applicant_kinds", "applicant", "attachments"}


@dataclass
class ServiceType:
    code: str
    name: str
    description: str
    entry: str
    order: int
    customer_classes: list[str]
    tariff: dict[str, bool]
    requires_account: bool
    class_field: str | None
    applicant_kinds: list[str]
    sections: dict[str, list[dict[str, Any]]]
    attachments: list[dict[str, Any]]
    stages: list[dict[str, Any]]
    source: str
    stage_index: dict[str, dict[str, Any]] = field(default_factory=dict)

    def field(self, section: str, name: str) -> dict[str, Any] | None:
        for decl in self.sections[section]:
            if decl["name"] == name:
                return decl
        return None


class _Where:
    """Builds ``file: path`` prefixes for error messages."""

    def __init__(self, source: str):
        self.source = source

    def fail(self, path: str, problem: str) -> CatalogError:
        return CatalogError(f"catalogue file {self.source}: {path}: {problem}")


def _need(where: _Where, table: Mapping, key: str, kind: type | tuple, path: str) -> Any:
    if key not in table:
        raise where.fail(f"{path}.{key}" if path else key, "missing")
    value = table[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise where.fail(f"{path}.{key}" if path else key, f"must be {_kind_name(kind)}, got {value!r}")
    return value


def _opt(where: _Where, table: Mapping, key: str, kind: type | tuple, path: str, default: Any = None) -> Any:
    if key not in table:
        return default
    return _need(where, table, key, kind, path)


def _kind_name(kind: type | tuple) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join({str: "a string", int: "an integer", bool: "true or false", list: "a list",
                        dict: "a table"}.get(k, k.__name__) for k in kinds)


def _unknown_keys(where: _Where, table: Mapping, allowed: set[str], path: str) -> None:
    extra = sorted(set(table) - allowed)
    if extra:
        raise where.fail(f"{path}.{extra[0]}" if path else extra[0],
                         f"unknown key (allowed: {', '.join(sorted(allowed))})")


def _check_condition(where: _Where, cond: Any, path: str, section: str | None,
                     known: dict[str, dict[str, dict]]) -> dict[str, Any]:
    """``{field = "identity", in = ["agent"]}`` or ``{field = "x", present = true}``.

    ``field`` is a name in the same section, or ``section.name``; it must be declared earlier
    (forms are filled top-down, and the sample generator relies on it).
    """
    if not isinstance(cond, dict):
        raise where.fail(path, "must be a table like { field = \"identity\", in = [\"agent\"] }")
    _unknown_keys(where, cond, {"field", "in", "present"}, path)
    ref = _need(where, cond, "field", str, path)
    sec, _, name = ref.rpartition(".")
    sec = sec or section
    if sec not in known or name not in known[sec]:
        raise where.fail(f"{path}.field", f"refers to {ref!r}, which is not a field declared before it")
    if ("in" in cond) == ("present" in cond):
        raise where.fail(path, "needs exactly one of 'in' (a list of values) or 'present = true'")
    if "in" in cond:
        values = _need(where, cond, "in", list, path)
        if not values:
            raise where.fail(f"{path}.in", "must not be empty")
        target = known[sec][name]
        if target["type"] == "select":
            allowed = [o["value"] for o in target["options"]]
            wrong = [v for v in values if v not in allowed]
            if wrong:
                raise where.fail(f"{path}.in", f"{wrong[0]!r} is not an option of {ref!r} ({allowed})")
    else:
        _need(where, cond, "present", bool, path)
    return {"field": f"{sec}.{name}", **{k: v for k, v in cond.items() if k != "field"}}


def _check_field(where: _Where, decl: Any, path: str, section: str, known: dict[str, dict[str, dict]]) -> dict:
    if not isinstance(decl, dict):
        raise where.fail(path, "must be a table")
    name = _need(where, decl, "name", str, path)
    if not _CODE.fullmatch(name):
        raise where.fail(f"{path}.name", f"{name!r} must be lower_snake_case")
    path = f"{section}.{name}"
    if name in known[section]:
        raise where.fail(path, "declared twice")
    _need(where, decl, "label", str, path)
    ftype = _need(where, decl, "type", str, path)
    if ftype not in TYPE_KEYS:
        raise where.fail(f"{path}.type", f"unknown type {ftype!r} (known: {', '.join(TYPE_KEYS)})")
    _unknown_keys(where, decl, COMMON_KEYS | TYPE_KEYS[ftype], path)
    out = dict(decl)
    out["required"] = _opt(where, decl, "required", bool, path, True)
    for key in ("placeholder", "help"):
        _opt(where, decl, key, str, path)
    if "required_when" in decl:
        out["required_when"] = _check_condition(where, decl["required_when"], f"{path}.required_when",
                                                section, known)
    if ftype == "string":
        lo = _opt(where, decl, "min_length", int, path, 0)
        hi = _opt(where, decl, "max_length", int, path)
        if hi is None:
            raise where.fail(f"{path}.max_length", "missing (every string needs a limit)")
        if lo < 0 or hi < max(lo, 1):
            raise where.fail(f"{path}.max_length", "must be at least min_length and 1")
        if "pattern" in decl:
            try:
                re.compile(_need(where, decl, "pattern", str, path))
            except re.error as exc:
                raise where.fail(f"{path}.pattern", f"not a regular expression: {exc}") from None
        _opt(where, decl, "pattern_message", str, path)
        _opt(where, decl, "multiline", bool, path)
        # a patterned field shows a valid example (placeholder, docs, generated test submissions)
        example = _opt(where, decl, "example", str, path)
        if "pattern" in decl and example is None:
            raise where.fail(f"{path}.example", "missing (a string with a pattern needs a valid example)")
        if example is not None and (not lo <= len(example) <= hi
                                    or ("pattern" in decl and not re.fullmatch(decl["pattern"], example))):
            raise where.fail(f"{path}.example", f"{example!r} does not pass the field's own rules")
    elif ftype == "integer":
        lo = _opt(where, decl, "min", int, path)
        hi = _opt(where, decl, "max", int, path)
        if lo is not None and hi is not None and hi < lo:
            raise where.fail(f"{path}.max", "must not be below min")
        _opt(where, decl, "unit", str, path)
        for key in ("min_of_account", "max_of_account"):
            if key in decl:
                rule = _need(where, decl, key, dict, path)
                _unknown_keys(where, rule, {"key", "percent", "label"}, f"{path}.{key}")
                _need(where, rule, "key", str, f"{path}.{key}")
                _need(where, rule, "label", str, f"{path}.{key}")
                if not 0 < _need(where, rule, "percent", int, f"{path}.{key}") <= 1000:
                    raise where.fail(f"{path}.{key}.percent", "must be between 1 and 1000")
    elif ftype == "date":
        for key in ("min_days", "max_days", "min_gap_days", "max_gap_days"):
            _opt(where, decl, key, int, path)
        if "after" in decl:
            other = _need(where, decl, "after", str, path)
            if other not in known[section] or known[section][other]["type"] != "date":
                raise where.fail(f"{path}.after", f"refers to {other!r}, which is not a date field declared before it")
        elif "min_gap_days" in decl or "max_gap_days" in decl:
            raise where.fail(path, "min_gap_days/max_gap_days need 'after'")
    elif ftype == "month":
        for key in ("min_months", "max_months"):
            _opt(where, decl, key, int, path)
    elif ftype == "select":
        options = _need(where, decl, "options", list, path)
        if not options:
            raise where.fail(f"{path}.options", "must not be empty")
        seen = set()
        checked = []
        for i, opt in enumerate(options):
            opath = f"{path}.options[{i}]"
            if not isinstance(opt, dict):
                raise where.fail(opath, "must be a table { value = ..., label = ... }")
            _unknown_keys(where, opt, OPTION_KEYS, opath)
            value = _need(where, opt, "value", (str, int), opath)
            if isinstance(value, bool) or value in seen:
                raise where.fail(f"{opath}.value", f"{value!r} is not a distinct string or integer")
            seen.add(value)
            _need(where, opt, "label", str, opath)
            opt = dict(opt)
            if "when" in opt:
                opt["when"] = _check_condition(where, opt["when"], f"{opath}.when", section, known)
            fmt = _opt(where, opt, "format", str, opath)
            if fmt is not None and fmt not in DOCUMENT_FORMATS:
                raise where.fail(f"{opath}.format", f"must be one of {sorted(DOCUMENT_FORMATS)}")
            if "pattern" in opt:
                try:
                    re.compile(_need(where, opt, "pattern", str, opath))
                except re.error as exc:
                    raise where.fail(f"{opath}.pattern", f"not a regular expression: {exc}") from None
            _opt(where, opt, "kind", str, opath)
            checked.append(opt)
        out["options"] = checked
    elif ftype == "boolean":
        _opt(where, decl, "must_be", bool, path)
    elif ftype == "document_no":
        kind_field = _need(where, decl, "kind_field", str, path)
        if kind_field not in known[section] or known[section][kind_field]["type"] != "select":
            raise where.fail(f"{path}.kind_field",
                             f"refers to {kind_field!r}, which is not a select field declared before it")
    elif ftype == "file":
        accept = _opt(where, decl, "accept", list, path, list(UPLOAD_TYPES))
        if not accept or any(a not in UPLOAD_TYPES for a in accept):
            raise where.fail(f"{path}.accept", f"must be a non-empty list from {list(UPLOAD_TYPES)}")
        out["accept"] = accept
    known[section][name] = out
    return out


def _check_attachment(where: _Where, decl: Any, path: str, known: dict[str, dict[str, dict]]) -> dict:
    if not isinstance(decl, dict):
        raise where.fail(path, "must be a table")
    kind = _need(where, decl, "kind", str, path)
    if not _CODE.fullmatch(kind):
        raise where.fail(f"{path}.kind", f"{kind!r} must be lower_snake_case")
    path = f"attachments.{kind}"
    _unknown_keys(where, decl, ATTACHMENT_KEYS, path)
    _need(where, decl, "label", str, path)
    out = dict(decl)
    out["required"] = _opt(where, decl, "required", bool, path, True)
    if "required_when" in decl:
        out["required_when"] = _check_condition(where, decl["required_when"], f"{path}.required_when",
                                                None, known)
    accept = _opt(where, decl, "accept", list, path, list(UPLOAD_TYPES))
    if not accept or any(a not in UPLOAD_TYPES for a in accept):
        raise where.fail(f"{path}.accept", f"must be a non-empty list from {list(UPLOAD_TYPES)}")
    out["accept"] = accept
    out["max_files"] = _opt(where, decl, "max_files", int, path, 5)
    if not 1 <= out["max_files"] <= 20:
        raise where.fail(f"{path}.max_files", "must be between 1 and 20")
    _opt(where, decl, "help", str, path)
    return out


def _check_stages(where: _Where, stages: Any) -> list[dict[str, Any]]:
    if not isinstance(stages, list) or not stages:
        raise where.fail("stages", "missing (a list of [[stages]] tables)")
    checked: list[dict[str, Any]] = []
    codes: list[str] = []
    for i, st in enumerate(stages):
        path = f"stages[{i}]"
        if not isinstance(st, dict):
            raise where.fail(path, "must be a table")
        code = _need(where, st, "code", str, path)
        if not _CODE.fullmatch(code) or code in codes:
            raise where.fail(f"{path}.code", f"{code!r} must be lower_snake_case and unique")
        path = f"stages.{code}"
        _unknown_keys(where, st, STAGE_KEYS, path)
        _need(where, st, "name", str, path)
        nxt = _need(where, st, "next", list, path)
        if any(not isinstance(n, str) for n in nxt):
            raise where.fail(f"{path}.next", "must be a list of stage codes")
        _opt(where, st, "customer_action", bool, path)
        _opt(where, st, "action", str, path)
        _opt(where, st, "description", str, path)
        codes.append(code)
        checked.append({"customer_action": False, **st, "final": not nxt})
    if codes[0] != "submitted":
        raise where.fail("stages[0].code", "the first stage must be 'submitted'")
    for required in ("accepted", "cancelled"):
        if required not in codes:
            raise where.fail("stages", f"a '{required}' stage is required")
    accepted_at = codes.index("accepted")
    for i, st in enumerate(checked):
        for n in st["next"]:
            if n not in codes:
                raise where.fail(f"stages.{st['code']}.next", f"unknown stage {n!r}")
            if n == "cancelled" and i >= accepted_at:
                raise where.fail(f"stages.{st['code']}.next",
                                 "'cancelled' is reachable only before 'accepted'")
            if n == "submitted":
                raise where.fail(f"stages.{st['code']}.next", "no stage leads back to 'submitted'")
    if checked[codes.index("cancelled")]["next"]:
        raise where.fail("stages.cancelled.next", "'cancelled' is final (next = [])")
    reached, todo = {"submitted"}, ["submitted"]
    by_code = {st["code"]: st for st in checked}
    while todo:
        for n in by_code[todo.pop()]["next"]:
            if n not in reached:
                reached.add(n)
                todo.append(n)
    unreached = [c for c in codes if c not in reached]
    if unreached:
        raise where.fail(f"stages.{unreached[0]}", "not reachable from 'submitted'")
    if not any(st["final"] and st["code"] not in ("cancelled", "rejected") for st in checked):
        raise where.fail("stages", "needs a final stage where the work is done (e.g. 'archived')")
    return checked


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise CatalogError(f"catalogue file {path.name}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise CatalogError(f"catalogue file {path}: cannot read: {exc}") from None


# -- validation of values ------------------------------------------------------------

@dataclass
class _Context:
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


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip()) or value == []


def _shanghai_today() -> date:
    return datetime.now(SHANGHAI).date()


def _field_label(service: ServiceType, ref: str) -> str:
    sec, _, name = ref.partition(".")
    decl = service.field(sec, name)
    return decl["label"] if decl else ref


def _validate_value(service: ServiceType, decl: dict[str, Any], section: str, raw: Any,
                    ctx: _Context) -> tuple[Any, str | None]:
    label, ftype = decl["label"], decl["type"]
    if ftype in ("string", "mobile", "bank_account", "id_number", "credit_code", "document_no", "file",
                 "date", "month"):
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
                other_label = _field_label(service, f"{section}.{decl['after']}")
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
            if raw == opt["value"] or (isinstance(opt["value"], int) and isinstance(raw, str)
                                       and raw == str(opt["value"])):
                if "when" in opt and ctx.holds(opt["when"]) is False:
                    other = _field_label(service, opt["when"]["field"])
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


class Catalog:
    """The loaded catalogue: listing, form schemas, eligibility, validation and stage rules."""

    def __init__(self, common: dict[str, Any], types: dict[str, ServiceType]):
        self.common = common
        self._types = dict(sorted(types.items(), key=lambda kv: (kv[1].order, kv[0])))

    # -- reading -----------------------------------------------------------------
    def codes(self) -> list[str]:
        return list(self._types)

    def get(self, code: str) -> ServiceType:
        """The type with this code; ``ServiceNotFound`` (404 ``service_not_found``) otherwise."""
        service = self._types.get(code) if isinstance(code, str) else None
        if service is None:
            raise ServiceNotFound()
        return service

    def list(self) -> list[dict[str, Any]]:
        """Every type, in menu order: code, name, description, entry, eligible classes."""
        return [{
            "code": s.code, "name": s.name, "description": s.description, "entry": s.entry,
            "customer_classes": list(s.customer_classes), "requires_account": s.requires_account,
        } for s in self._types.values()]

    def schema(self, code: str) -> dict[str, Any]:
        """The form schema the mini-program renders (see docs/catalogue.md for its shape)."""
        s = self.get(code)
        tariff_flags = self.common["tariff_flags"]

        def fields(section: str) -> list[dict[str, Any]]:
            out = []
            for decl in s.sections[section]:
                item = copy.deepcopy(decl)
                item["path"] = f"{section}.{decl['name']}"
                item["sensitive"] = decl["type"] in SENSITIVE_TYPES
                out.append(item)
            return out

        return {
            "code": s.code, "name": s.name, "description": s.description, "entry": s.entry,
            "eligibility": {
                "customer_classes": list(s.customer_classes),
                "tariff": [{"flag": k, "label": tariff_flags[k], "required": v} for k, v in s.tariff.items()],
                "requires_account": s.requires_account,
                "class_field": f"form.{s.class_field}" if s.class_field else None,
                "applicant_kinds": [{"value": k, "label": self.common["applicant_kinds"][k]}
                                    for k in s.applicant_kinds],
            },
            "applicant": {"label": "申请人信息", "fields": fields("applicant")},
            "form": {"label": "业务信息", "fields": fields("form")},
            "attachments": copy.deepcopy(s.attachments),
            "stages": [{"code": st["code"], "name": st["name"], "next": list(st["next"]),
                        "customer_action": st["customer_action"], "final": st["final"],
                        **({"action": st["action"]} if "action" in st else {})} for st in s.stages],
        }

    def attachment_kinds(self) -> set[str]:
        """Every attachment kind any type asks for (an upload may be labelled with one)."""
        return {a["kind"] for s in self._types.values() for a in s.attachments}

    def sensitive_paths(self, code: str) -> list[str]:
        """Paths of values to encrypt at rest (ID numbers, phones, bank accounts)."""
        s = self.get(code)
        return [f"{sec}.{d['name']}" for sec in SECTIONS for d in s.sections[sec] if d["type"] in SENSITIVE_TYPES]

    # -- rules -------------------------------------------------------------------
    def eligible(self, code: str, account: Mapping[str, Any] | None,
                 form: Mapping[str, Any] | None = None) -> str | None:
        """Why this customer may not apply (a Chinese sentence), or ``None`` when they may.

        ``account`` is the bound account (``customer_class``, ``tariff`` flags). For new
        connections (``requires_account = false``) there is no account yet: the class is the
        one the applicant asks for, read from the cleaned ``form`` (the type's ``class_field``).
        """
        s = self.get(code)
        classes = "、".join(s.customer_classes)
        if not s.requires_account:
            if s.class_field:
                wanted = (form or {}).get(s.class_field)
                if wanted not in s.customer_classes:
                    return f"{s.name}仅受理{classes}客户"
            return None
        if not account:
            return f"办理{s.name}须先绑定户号"
        if account.get("customer_class") not in s.customer_classes:
            return f"{s.name}仅受理{classes}客户，该户号为{account.get('customer_class') or '未知类别'}"
        tariff = account.get("tariff") or {}
        for flag, wanted in s.tariff.items():
            if bool(tariff.get(flag)) is not wanted:
                label = self.common["tariff_flags"][flag]
                return f"{s.name}仅受理{'' if wanted else '未'}执行{label}的客户"
        return None

    def validate(self, code: str, submission: Any, *, account: Mapping[str, Any] | None = None,
                 today: date | None = None) -> tuple[dict[str, Any], list[dict[str, str]]]:
        """Check a submission ``{"applicant": {...}, "form": {...}, "attachments": {...}}``.

        Returns ``(clean, errors)``: ``clean`` has the same three parts with normalised values
        (fields that do not apply dropped; attachments as ``{kind: [file_id, ...]}``), and
        ``errors`` lists EVERY problem as ``{"field": "form.capacity_kva", "message": "..."}``.
        ``account`` enables rules relative to the account (e.g. demand not below 40% of
        capacity); ``today`` defaults to the date in Asia/Shanghai. Whether an attachment's
        file belongs to the applicant is for the caller to check (``UploadService.get_owned``).
        """
        s = self.get(code)
        ctx = _Context(today=today or _shanghai_today(), account=account,
                       clean={"applicant": {}, "form": {}}, failed=set(), errors=[])
        if not isinstance(submission, Mapping):
            ctx.error("submission", "提交内容格式不正确")
            return {"applicant": {}, "form": {}, "attachments": {}}, ctx.errors
        unknown_top = sorted(set(submission) - {"applicant", "form", "attachments"})
        for key in unknown_top:
            ctx.error(str(key), "不支持的字段")
        for section in SECTIONS:
            data = submission.get(section, {})
            if data is None:
                data = {}
            if not isinstance(data, Mapping):
                ctx.error(section, "格式不正确")
                data = {}
            declared = {d["name"] for d in s.sections[section]}
            for key in data:
                if key not in declared:
                    ctx.error(f"{section}.{key}", "不支持的字段")
            for decl in s.sections[section]:
                path = f"{section}.{decl['name']}"
                raw = data.get(decl["name"])
                applies: bool | None = True
                if "required_when" in decl:
                    applies = ctx.holds(decl["required_when"])
                if applies is False:
                    continue  # a field for another case (e.g. agent details when the owner applies)
                if _blank(raw):
                    if decl["required"] and applies:
                        verb = "请选择" if decl["type"] in ("select", "date", "month", "boolean") else "请填写"
                        if decl["type"] == "file":
                            verb = "请上传"
                        ctx.error(path, f"{verb}{decl['label']}")
                    continue
                value, message = _validate_value(s, decl, section, raw, ctx)
                if message:
                    ctx.error(path, message)
                    ctx.failed.add(path)
                else:
                    ctx.clean[section][decl["name"]] = value
        attachments = self._validate_attachments(s, submission.get("attachments"), ctx)
        return {"applicant": ctx.clean["applicant"], "form": ctx.clean["form"],
                "attachments": attachments}, ctx.errors

    def _validate_attachments(self, s: ServiceType, raw: Any, ctx: _Context) -> dict[str, list[str]]:
        if raw is None:
            raw = {}
        if not isinstance(raw, Mapping):
            ctx.error("attachments", "格式不正确")
            raw = {}
        declared = {a["kind"]: a for a in s.attachments}
        for key in raw:
            if key not in declared:
                ctx.error(f"attachments.{key}", "不支持的附件类型")
        clean: dict[str, list[str]] = {}
        for att in s.attachments:
            path = f"attachments.{att['kind']}"
            value = raw.get(att["kind"])
            ids = [value] if isinstance(value, str) else value
            applies: bool | None = True
            if "required_when" in att:
                applies = ctx.holds(att["required_when"])
            if applies is False:
                continue
            if _blank(ids):
                if att["required"] and applies:
                    ctx.error(path, f"请上传{att['label']}")
                continue
            if not isinstance(ids, list) or not all(matches("object_id", i) for i in ids):
                ctx.error(path, f"{att['label']}文件无效，请重新上传")
                continue
            unique = list(dict.fromkeys(ids))
            if len(unique) > att["max_files"]:
                ctx.error(path, f"{att['label']}最多上传{att['max_files']}个文件")
                continue
            clean[att["kind"]] = unique
        return clean

    def check_attachment(self, code: str, kind: str, content_type: str) -> str | None:
        """Why a stored file may not serve as this attachment (its type), or ``None``."""
        s = self.get(code)
        att = next((a for a in s.attachments if a["kind"] == kind), None)
        if att is None:
            return "不支持的附件类型"
        if content_type not in att["accept"]:
            return f"{att['label']}须为{'、'.join(_TYPE_NAMES[t] for t in att['accept'])}文件"
        return None

    def stages(self, code: str) -> list[dict[str, Any]]:
        return copy.deepcopy(self.get(code).stages)

    def stage(self, code: str, stage: str) -> dict[str, Any]:
        """One stage of a type (name, next, customer_action); ``StageNotFound`` if not declared."""
        found = self.get(code).stage_index.get(stage)
        if found is None:
            raise StageNotFound()
        return copy.deepcopy(found)

    def next_stages(self, code: str, stage: str) -> list[str]:
        """The stages a work order of this type may move to from ``stage``."""
        return list(self.stage(code, stage)["next"])


_TYPE_NAMES = {"image/jpeg": "JPEG", "image/png": "PNG", "application/pdf": "PDF"}


# -- loading ---------------------------------------------------------------------------

def _load_common(path: Path) -> dict[str, Any]:
    where = _Where(path.name)
    data = _read_toml(path)
    _unknown_keys(where, data, COMMON_TOP, "")
    classes = _need(where, data, "customer_classes", list, "")
    if not classes or not all(isinstance(c, str) for c in classes):
        raise where.fail("customer_classes", "must be a non-empty list of names")
    flags = _need(where, data, "tariff_flags", dict, "")
    kinds = _need(where, data, "applicant_kinds", dict, "")
    for table, name in ((flags, "tariff_flags"), (kinds, "applicant_kinds")):
        for k, v in table.items():
            if not _CODE.fullmatch(k) or not isinstance(v, str):
                raise where.fail(f"{name}.{k}", "must be lower_snake_case = \"中文名称\"")
    known: dict[str, dict[str, dict]] = {"applicant": {}, "form": {}}
    fields = [_check_field(where, d, f"applicant[{i}]", "applicant", known)
              for i, d in enumerate(_need(where, data, "applicant", list, ""))]
    id_type = next((f for f in fields if f["name"] == "id_type"), None)
    if id_type is None or id_type["type"] != "select":
        raise where.fail("applicant.id_type", "the applicant block needs a select field 'id_type'")
    for i, opt in enumerate(id_type["options"]):
        if opt.get("kind") not in kinds:
            raise where.fail(f"applicant.id_type.options[{i}].kind", f"must be one of {sorted(kinds)}")
    attachments = [_check_attachment(where, d, f"attachments[{i}]", known)
                   for i, d in enumerate(_opt(where, data, "attachments", list, "", []))]
    return {"customer_classes": classes, "tariff_flags": flags, "applicant_kinds": kinds,
            "applicant": fields, "attachments": attachments, "source": path.name}


def _load_type(path: Path, common: dict[str, Any]) -> ServiceType:
    where = _Where(path.name)
    data = _read_toml(path)
    _unknown_keys(where, data, TYPE_KEYS_TOP, "")
    code = _need(where, data, "code", str, "")
    if not _CODE.fullmatch(code):
        raise where.fail("code", f"{code!r} must be lower_snake_case")
    for key in ("name", "description", "entry"):
        _need(where, data, key, str, "")
    order = _opt(where, data, "order", int, "", 1000)
    elig = _need(where, data, "eligibility", dict, "")
    _unknown_keys(where, elig, ELIGIBILITY_KEYS, "eligibility")
    classes = _need(where, elig, "customer_classes", list, "eligibility")
    if not classes or any(c not in common["customer_classes"] for c in classes):
        raise where.fail("eligibility.customer_classes",
                         f"must be a non-empty list from {common['customer_classes']}, got {classes!r}")
    tariff = _opt(where, elig, "tariff", dict, "eligibility", {})
    for flag, wanted in tariff.items():
        if flag not in common["tariff_flags"] or not isinstance(wanted, bool):
            raise where.fail(f"eligibility.tariff.{flag}",
                             f"must be a flag from {sorted(common['tariff_flags'])} = true|false")
    requires_account = _need(where, elig, "requires_account", bool, "eligibility")
    kinds = _need(where, elig, "applicant_kinds", list, "eligibility")
    if not kinds or any(k not in common["applicant_kinds"] for k in kinds):
        raise where.fail("eligibility.applicant_kinds", f"must be a non-empty list from "
                                                        f"{sorted(common['applicant_kinds'])}")
    # the shared applicant block, with the identity documents this type admits
    applicant = copy.deepcopy(common["applicant"])
    for decl in applicant:
        if decl["name"] == "id_type":
            decl["options"] = [o for o in decl["options"] if o["kind"] in kinds]
            if not decl["options"]:
                raise where.fail("eligibility.applicant_kinds", "no identity document of the shared block fits")
    known: dict[str, dict[str, dict]] = {"applicant": {d["name"]: d for d in applicant}, "form": {}}
    form = [_check_field(where, d, f"form[{i}]", "form", known)
            for i, d in enumerate(_need(where, data, "form", list, ""))]
    class_field = _opt(where, elig, "class_field", str, "eligibility")
    if class_field is not None:
        decl = next((d for d in form if d["name"] == class_field), None)
        if decl is None or decl["type"] != "select":
            raise where.fail("eligibility.class_field", f"{class_field!r} must name a select field of the form")
        if any(o["value"] not in common["customer_classes"] for o in decl["options"]):
            raise where.fail(f"form.{class_field}.options", "values must be customer classes")
    if not requires_account:
        address = next((d for d in form if d["name"] == "address"), None)
        if address is None or address["type"] != "string":
            raise where.fail("form.address", "a type without an existing account needs a string field 'address'")
    own = [_check_attachment(where, d, f"attachments[{i}]", known)
           for i, d in enumerate(_opt(where, data, "attachments", list, "", []))]
    attachments = own + copy.deepcopy(common["attachments"])
    kinds_seen = [a["kind"] for a in attachments]
    dup = next((k for k in kinds_seen if kinds_seen.count(k) > 1), None)
    if dup:
        raise where.fail(f"attachments.{dup}", f"declared twice (or also in {COMMON_FILE})")
    stages = _check_stages(where, data.get("stages"))
    service = ServiceType(
        code=code, name=data["name"], description=data["description"], entry=data["entry"], order=order,
        customer_classes=classes, tariff=tariff, requires_account=requires_account, class_field=class_field,
        applicant_kinds=kinds, sections={"applicant": applicant, "form": form}, attachments=attachments,
        stages=stages, source=path.name,
    )
    service.stage_index = {st["code"]: st for st in stages}
    return service


def load_catalog(*dirs: str | Path | None) -> Catalog:
    """Read the catalogue from these folders, in order; a later folder adds types or replaces
    them (same ``code``), and its ``_common.toml``, if any, replaces the shared block.

    Raises ``CatalogError`` naming the file and the field at the first problem.
    """
    folders = [Path(d) for d in dirs if d]
    for folder in folders:
        if not folder.is_dir():
            raise CatalogError(f"catalogue folder {folder} does not exist")
    common_path = None
    for folder in folders:
        if (folder / COMMON_FILE).is_file():
            common_path = folder / COMMON_FILE
    if common_path is None:
        raise CatalogError(f"no {COMMON_FILE} in the catalogue folders")
    common = _load_common(common_path)
    types: dict[str, ServiceType] = {}
    for folder in folders:
        seen_here: dict[str, str] = {}
        for path in sorted(folder.glob("*.toml")):
            if path.name.startswith("_"):
                continue
            service = _load_type(path, common)
            if service.code in seen_here:
                raise CatalogError(f"catalogue file {path.name}: code: {service.code!r} is also "
                                   f"declared in {seen_here[service.code]}")
            seen_here[service.code] = path.name
            types[service.code] = service
    if not types:
        raise CatalogError("the catalogue has no business types")
    return Catalog(common, types)


def default_dirs(extra: str | None) -> Iterable[Path | str | None]:
    """The built-in folder, then the configured extra/override folder (``WX_CATALOG_DIR``)."""
    return (BUILTIN_DIR, extra or None)
