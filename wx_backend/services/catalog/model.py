"""The catalog's runtime model: a business type (``ServiceType``) and the loaded catalog
(``Catalog``: listing, form schemas, eligibility, stage rules; submissions are checked by
``forms``)."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from ...config import ConfigError
from ...errors import NotFound
from ...validators import (
    matches,
)
from .forms import FormContext, blank, shanghai_today, validate_value

COMMON_FILE = "_common.toml"  # the shared block of every folder

UPLOAD_TYPES = ("image/jpeg", "image/png", "application/pdf")
SECTIONS = ("applicant", "form")
SENSITIVE_TYPES = {"id_number", "document_no", "mobile", "bank_account"}  # kept only encrypted


class CatalogError(ConfigError):
    """A catalogue file is malformed; the message names the file and the field."""


class ServiceNotFound(NotFound):
    code = "service_not_found"
    message = "未找到该业务"


class StageNotFound(NotFound):
    code = "stage_not_found"
    message = "未知的工单环节"


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
        return [
            {
                "code": s.code,
                "name": s.name,
                "description": s.description,
                "entry": s.entry,
                "customer_classes": list(s.customer_classes),
                "requires_account": s.requires_account,
            }
            for s in self._types.values()
        ]

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
            "code": s.code,
            "name": s.name,
            "description": s.description,
            "entry": s.entry,
            "eligibility": {
                "customer_classes": list(s.customer_classes),
                "tariff": [{"flag": k, "label": tariff_flags[k], "required": v} for k, v in s.tariff.items()],
                "requires_account": s.requires_account,
                "class_field": f"form.{s.class_field}" if s.class_field else None,
                "applicant_kinds": [
                    {"value": k, "label": self.common["applicant_kinds"][k]} for k in s.applicant_kinds
                ],
            },
            "applicant": {"label": "申请人信息", "fields": fields("applicant")},
            "form": {"label": "业务信息", "fields": fields("form")},
            "attachments": copy.deepcopy(s.attachments),
            "stages": [
                {
                    "code": st["code"],
                    "name": st["name"],
                    "next": list(st["next"]),
                    "customer_action": st["customer_action"],
                    "final": st["final"],
                    **({"action": st["action"]} if "action" in st else {}),
                }
                for st in s.stages
            ],
        }

    def attachment_kinds(self) -> set[str]:
        """Every attachment kind any type asks for (an upload may be labelled with one)."""
        return {a["kind"] for s in self._types.values() for a in s.attachments}

    def sensitive_paths(self, code: str) -> list[str]:
        """Paths of values to encrypt at rest (ID numbers, phones, bank accounts)."""
        s = self.get(code)
        return [f"{sec}.{d['name']}" for sec in SECTIONS for d in s.sections[sec] if d["type"] in SENSITIVE_TYPES]

    # -- rules -------------------------------------------------------------------
    def eligible(
        self, code: str, account: Mapping[str, Any] | None, form: Mapping[str, Any] | None = None
    ) -> str | None:
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

    def validate(
        self, code: str, submission: Any, *, account: Mapping[str, Any] | None = None, today: date | None = None
    ) -> tuple[dict[str, Any], list[dict[str, str]]]:
        """Check a submission ``{"applicant": {...}, "form": {...}, "attachments": {...}}``.

        Returns ``(clean, errors)``: ``clean`` has the same three parts with normalised values
        (fields that do not apply dropped; attachments as ``{kind: [file_id, ...]}``), and
        ``errors`` lists EVERY problem as ``{"field": "form.capacity_kva", "message": "..."}``.
        ``account`` enables rules relative to the account (e.g. demand not below 40% of
        capacity); ``today`` defaults to the date in Asia/Shanghai. Whether an attachment's
        file belongs to the applicant is for the caller to check (``UploadService.get_owned``).
        """
        s = self.get(code)
        ctx = FormContext(
            today=today or shanghai_today(),
            account=account,
            clean={"applicant": {}, "form": {}},
            failed=set(),
            errors=[],
        )
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
                if blank(raw):
                    if decl["required"] and applies:
                        verb = "请选择" if decl["type"] in ("select", "date", "month", "boolean") else "请填写"
                        if decl["type"] == "file":
                            verb = "请上传"
                        ctx.error(path, f"{verb}{decl['label']}")
                    continue
                value, message = validate_value(s, decl, section, raw, ctx)
                if message:
                    ctx.error(path, message)
                    ctx.failed.add(path)
                else:
                    ctx.clean[section][decl["name"]] = value
        attachments = self._validate_attachments(s, submission.get("attachments"), ctx)
        return {"applicant": ctx.clean["applicant"], "form": ctx.clean["form"], "attachments": attachments}, ctx.errors

    def _validate_attachments(self, s: ServiceType, raw: Any, ctx: FormContext) -> dict[str, list[str]]:
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
            if blank(ids):
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
