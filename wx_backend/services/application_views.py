"""What an application looks like to the customer (``public``), and to the marketing system
(``webhook_body``): personal data masked, times in Asia/Shanghai, what to do next, the progress
along the work order's main path.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from ..security import DataProtector, mask_id, mask_name, mask_phone
from .catalog import Catalog
from .periods import SHANGHAI

# status: what the customer's 服务记录 filters on, derived from the stage
STATUSES = {
    "pending": "待受理",
    "processing": "办理中",
    "action_required": "待您处理",
    "completed": "已办结",
    "cancelled": "已撤销",
    "rejected": "不予受理",
}
CONTRACT_STAGE = "contract_signing"


def local_iso(value: datetime | None) -> str | None:
    """A stored UTC time as an Asia/Shanghai ISO string (``2026-02-26T09:30:00+08:00``)."""
    if value is None:
        return None
    return value.astimezone(SHANGHAI).isoformat(timespec="seconds")


class ApplicationViews:
    """The views of a stored application (``app.applications.views``)."""

    def __init__(self, catalog: Catalog, protector: DataProtector):
        self.catalog = catalog
        self.protector = protector

    def sensitive_values(self, doc: dict[str, Any]) -> dict[str, str]:
        """The decrypted personal data of an application, by path (for contracts, the webhook)."""
        return {
            f"{section}.{name}": self.protector.decrypt(value, f"application:{section}.{name}")
            for section, values in (doc.get("encrypted") or doc.get("sealed") or {}).items()
            for name, value in values.items()
        }  # "sealed": stored before the field was renamed

    def _masked_sections(self, doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
        service = self.catalog.get(doc["service"])
        values = self.sensitive_values(doc)
        out: dict[str, dict[str, Any]] = {}
        for section in ("applicant", "form"):
            stored = doc.get(section) or {}
            shown: dict[str, Any] = {}
            declared = [d["name"] for d in service.sections[section]]
            for name in declared + [k for k in stored if k not in declared]:
                path = f"{section}.{name}"
                if path in values:
                    decl = service.field(section, name) or {}
                    shown[name] = mask_phone(values[path]) if decl.get("type") == "mobile" else mask_id(values[path])
                elif name in stored:
                    value = stored[name]
                    shown[name] = (
                        mask_name(value) if name in ("name", "agent_name") and isinstance(value, str) else value
                    )
            out[section] = shown
        return out

    def public(self, doc: dict[str, Any], detailed: bool = False) -> dict[str, Any]:
        """The customer's view: sensitive values masked, times in Asia/Shanghai, what to do next."""
        service = self.catalog.get(doc["service"])
        stage = service.stage_index.get(doc["stage"]) or {"code": doc["stage"], "name": doc["stage"]}
        view: dict[str, Any] = {
            "app_no": doc["app_no"],
            "service": doc["service"],
            "service_name": service.name,
            "account_no": doc.get("account_no"),
            "stage": doc["stage"],
            "stage_name": stage["name"],
            "status": doc["status"],
            "status_name": STATUSES.get(doc["status"], doc["status"]),
            "contract_no": doc.get("contract_no"),
            "created_at": local_iso(doc["created_at"]),
            "updated_at": local_iso(doc["updated_at"]),
            "next_action": self._next_action(doc, service, stage),
            "can_cancel": "cancelled" in stage.get("next", []),
        }
        if detailed:
            sections = self._masked_sections(doc)
            labels = {f"{sec}.{d['name']}": d["label"] for sec in ("applicant", "form") for d in service.sections[sec]}
            view["applicant"] = sections["applicant"]
            view["form"] = sections["form"]
            view["fields"] = [
                {"path": f"{sec}.{name}", "label": labels.get(f"{sec}.{name}", name), "value": value}
                for sec in ("applicant", "form")
                for name, value in sections[sec].items()
            ]
            att_labels = {a["kind"]: a["label"] for a in service.attachments}
            view["attachments"] = [
                {
                    "kind": kind,
                    "label": att_labels.get(kind, kind),
                    "files": [
                        {"file_id": f["file_id"], "content_type": f["content_type"], "size": f["size"]} for f in items
                    ],
                }
                for kind, items in (doc.get("attachments") or {}).items()
            ]
            view["timeline"] = [
                {
                    "stage": h["stage"],
                    "stage_name": (service.stage_index.get(h["stage"]) or {}).get("name", h["stage"]),
                    "at": local_iso(h["at"]),
                    "note": h.get("note", ""),
                }
                for h in doc.get("history", [])
            ]
            view["stages"] = self._progress(doc, service)
        return view

    def _next_action(self, doc: dict[str, Any], service: Any, stage: dict[str, Any]) -> dict[str, Any]:
        """What the customer must do now (``required``) or is waiting for."""
        code = stage["code"]
        app_no = doc["app_no"]
        if stage.get("customer_action"):
            page = (
                f"pages/applications/detail?app_no={app_no}&action=sign"
                if code == CONTRACT_STAGE
                else f"pages/applications/detail?app_no={app_no}"
            )
            if code == CONTRACT_STAGE and doc.get("contract_no"):
                page = f"pages/contract/sign?contract_no={doc['contract_no']}"
            return {"required": True, "text": stage.get("action") or f"请办理{stage['name']}", "page": page}
        if code == "submitted":
            return {"required": False, "text": "等待供电公司受理；受理前您可以撤销申请"}
        if code == "cancelled":
            return {"required": False, "text": "申请已撤销"}
        if code == "rejected":
            return {"required": False, "text": "申请未予受理，详情请查看办理记录或咨询95598"}
        if stage.get("final"):
            return {"required": False, "text": "业务已办结"}
        following = [service.stage_index[n]["name"] for n in stage.get("next", []) if n in service.stage_index]
        text = f"供电公司正在办理“{stage['name']}”，无需您操作"
        if following:
            text += f"；下一步：{following[0]}"
        return {"required": False, "text": text}

    def _progress(self, doc: dict[str, Any], service: Any) -> list[dict[str, Any]]:
        """The main path of the work order (first declared transitions) marked done/current/pending."""
        reached = {h["stage"]: h["at"] for h in doc.get("history", [])}
        path, code = ["submitted"], "submitted"
        while True:
            nxt = [n for n in service.stage_index[code]["next"] if n not in ("cancelled", "rejected")]
            if not nxt or nxt[0] in path:
                break
            code = nxt[0]
            path.append(code)
        if doc["stage"] not in path:
            path.append(doc["stage"])  # cancelled, rejected, or a side branch
        out = []
        current_index = path.index(doc["stage"])
        for i, code in enumerate(path):
            state = "done" if i < current_index else "current" if i == current_index else "pending"
            out.append(
                {
                    "stage": code,
                    "name": service.stage_index[code]["name"],
                    "state": state,
                    "at": local_iso(reached.get(code)),
                }
            )
        return out

    # -- the marketing system's copy ----------------------------------------------------------
    def webhook_body(self, doc: dict[str, Any]) -> dict[str, Any]:
        """``application.created``: the application, personal data masked in ``applicant``/``form``
        and given in full only inside ``encrypted`` (ciphertext; see docs/applications.md)."""
        service = self.catalog.get(doc["service"])
        sections = self._masked_sections(doc)
        values = self.sensitive_values(doc)
        return {
            "app_no": doc["app_no"],
            "service": doc["service"],
            "service_name": service.name,
            "account_no": doc.get("account_no"),
            "stage": doc["stage"],
            "applicant": sections["applicant"],
            "form": sections["form"],
            "attachments": {
                kind: [
                    {"file_id": f["file_id"], "content_type": f["content_type"], "sha256": f["sha256"]} for f in items
                ]
                for kind, items in (doc.get("attachments") or {}).items()
            },
            "created_at": local_iso(doc["created_at"]),
            "encrypted": self.protector.encrypt(json.dumps(values, ensure_ascii=False), "webhook") if values else None,
        }
