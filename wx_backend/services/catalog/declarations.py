"""The TOML format of one catalog file, checked field by field: a malformed file is a
``CatalogError`` naming the file and the field (docs/catalogue.md describes the format)."""

from __future__ import annotations

import copy
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .model import COMMON_FILE, UPLOAD_TYPES, CatalogError, ServiceType

_CODE = re.compile(r"[a-z][a-z0-9_]{1,39}", re.ASCII)


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
TYPE_KEYS_TOP = {"code", "name", "description", "entry", "order", "eligibility", "form", "attachments", "stages"}
ELIGIBILITY_KEYS = {"customer_classes", "tariff", "requires_account", "class_field", "applicant_kinds"}
ATTACHMENT_KEYS = {"kind", "label", "required", "required_when", "accept", "max_files", "help"}
STAGE_KEYS = {"code", "name", "next", "customer_action", "action", "description"}
COMMON_TOP = {"customer_classes", "tariff_flags", "applicant_kinds", "applicant", "attachments"}


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
    return " or ".join(
        {str: "a string", int: "an integer", bool: "true or false", list: "a list", dict: "a table"}.get(k, k.__name__)
        for k in kinds
    )


def _unknown_keys(where: _Where, table: Mapping, allowed: set[str], path: str) -> None:
    extra = sorted(set(table) - allowed)
    if extra:
        raise where.fail(
            f"{path}.{extra[0]}" if path else extra[0], f"unknown key (allowed: {', '.join(sorted(allowed))})"
        )


def _check_condition(
    where: _Where, cond: Any, path: str, section: str | None, known: dict[str, dict[str, dict]]
) -> dict[str, Any]:
    """``{field = "identity", in = ["agent"]}`` or ``{field = "x", present = true}``.

    ``field`` is a name in the same section, or ``section.name``; it must be declared earlier
    (forms are filled top-down, and the sample generator relies on it).
    """
    if not isinstance(cond, dict):
        raise where.fail(path, 'must be a table like { field = "identity", in = ["agent"] }')
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
        out["required_when"] = _check_condition(where, decl["required_when"], f"{path}.required_when", section, known)
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
        if example is not None and (
            not lo <= len(example) <= hi or ("pattern" in decl and not re.fullmatch(decl["pattern"], example))
        ):
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
            raise where.fail(
                f"{path}.kind_field", f"refers to {kind_field!r}, which is not a select field declared before it"
            )
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
        out["required_when"] = _check_condition(where, decl["required_when"], f"{path}.required_when", None, known)
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
                raise where.fail(f"stages.{st['code']}.next", "'cancelled' is reachable only before 'accepted'")
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


def load_common(path: Path) -> dict[str, Any]:
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
                raise where.fail(f"{name}.{k}", 'must be lower_snake_case = "中文名称"')
    known: dict[str, dict[str, dict]] = {"applicant": {}, "form": {}}
    fields = [
        _check_field(where, d, f"applicant[{i}]", "applicant", known)
        for i, d in enumerate(_need(where, data, "applicant", list, ""))
    ]
    id_type = next((f for f in fields if f["name"] == "id_type"), None)
    if id_type is None or id_type["type"] != "select":
        raise where.fail("applicant.id_type", "the applicant block needs a select field 'id_type'")
    for i, opt in enumerate(id_type["options"]):
        if opt.get("kind") not in kinds:
            raise where.fail(f"applicant.id_type.options[{i}].kind", f"must be one of {sorted(kinds)}")
    attachments = [
        _check_attachment(where, d, f"attachments[{i}]", known)
        for i, d in enumerate(_opt(where, data, "attachments", list, "", []))
    ]
    return {
        "customer_classes": classes,
        "tariff_flags": flags,
        "applicant_kinds": kinds,
        "applicant": fields,
        "attachments": attachments,
        "source": path.name,
    }


def load_type(path: Path, common: dict[str, Any]) -> ServiceType:
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
        raise where.fail(
            "eligibility.customer_classes",
            f"must be a non-empty list from {common['customer_classes']}, got {classes!r}",
        )
    tariff = _opt(where, elig, "tariff", dict, "eligibility", {})
    for flag, wanted in tariff.items():
        if flag not in common["tariff_flags"] or not isinstance(wanted, bool):
            raise where.fail(
                f"eligibility.tariff.{flag}", f"must be a flag from {sorted(common['tariff_flags'])} = true|false"
            )
    requires_account = _need(where, elig, "requires_account", bool, "eligibility")
    kinds = _need(where, elig, "applicant_kinds", list, "eligibility")
    if not kinds or any(k not in common["applicant_kinds"] for k in kinds):
        raise where.fail(
            "eligibility.applicant_kinds", f"must be a non-empty list from {sorted(common['applicant_kinds'])}"
        )
    # the shared applicant block, with the identity documents this type admits
    applicant = copy.deepcopy(common["applicant"])
    for decl in applicant:
        if decl["name"] == "id_type":
            decl["options"] = [o for o in decl["options"] if o["kind"] in kinds]
            if not decl["options"]:
                raise where.fail("eligibility.applicant_kinds", "no identity document of the shared block fits")
    known: dict[str, dict[str, dict]] = {"applicant": {d["name"]: d for d in applicant}, "form": {}}
    form = [
        _check_field(where, d, f"form[{i}]", "form", known) for i, d in enumerate(_need(where, data, "form", list, ""))
    ]
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
    own = [
        _check_attachment(where, d, f"attachments[{i}]", known)
        for i, d in enumerate(_opt(where, data, "attachments", list, "", []))
    ]
    attachments = own + copy.deepcopy(common["attachments"])
    kinds_seen = [a["kind"] for a in attachments]
    dup = next((k for k in kinds_seen if kinds_seen.count(k) > 1), None)
    if dup:
        raise where.fail(f"attachments.{dup}", f"declared twice (or also in {COMMON_FILE})")
    stages = _check_stages(where, data.get("stages"))
    service = ServiceType(
        code=code,
        name=data["name"],
        description=data["description"],
        entry=data["entry"],
        order=order,
        customer_classes=classes,
        tariff=tariff,
        requires_account=requires_account,
        class_field=class_field,
        applicant_kinds=kinds,
        sections={"applicant": applicant, "form": form},
        attachments=attachments,
        stages=stages,
        source=path.name,
    )
    service.stage_index = {st["code"]: st for st in stages}
    return service
