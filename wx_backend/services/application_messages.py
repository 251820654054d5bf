"""What leaves when an application changes: the customer's notifications and the marketing
system's webhook events, each queued in the outbox under a dedupe key naming the change, so
repeating a change (or retrying after a crash between the update and the enqueue) queues
nothing twice. The one place application messages leave.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from bson import ObjectId

from .application_views import CONTRACT_STAGE, ApplicationViews, local_iso
from .catalog import Catalog


class ApplicationMessages:
    def __init__(self, catalog: Catalog, views: ApplicationViews, outbox: Any, notifications: Any):
        self.catalog = catalog
        self.views = views
        self.outbox = outbox
        self.notifications = notifications

    async def _enqueue_webhook(self, event: str, dedupe_key: str, body: dict[str, Any]) -> bool:
        """Queue an event for the marketing system's webhook (outbox kind ``webhook``)."""
        return await self.outbox.enqueue("webhook", dedupe_key, {"event": event, "body": body})

    async def _notify(
        self, user_id: ObjectId, message: str, data: dict[str, Any], page: str | None, dedupe_key: str
    ) -> bool:
        """Queue a customer notification (a key of the message templates)."""
        return await self.notifications.notify_user(user_id, message, data, page, dedupe_key)

    async def created(self, doc: dict[str, Any]) -> None:
        """A new application: ``application.created`` to the marketing system, the receipt to the customer."""
        app_no = doc["app_no"]
        service = self.catalog.get(doc["service"])
        await self._enqueue_webhook("application.created", f"app:{app_no}:created", self.views.webhook_body(doc))
        await self._notify(
            doc["user_id"],
            "application_received",
            {
                "app_no": app_no,
                "service_name": service.name,
                "submitted_at": local_iso(doc["created_at"])[:16].replace("T", " "),
            },
            f"pages/applications/detail?app_no={app_no}",
            f"app:{app_no}:received",
        )

    async def cancelled(self, doc: dict[str, Any], at: datetime) -> None:
        """The customer cancelled: ``application.cancelled`` to the marketing system."""
        app_no = doc["app_no"]
        await self._enqueue_webhook(
            "application.cancelled",
            f"app:{app_no}:cancelled",
            {
                "app_no": app_no,
                "service": doc["service"],
                "stage": "cancelled",
                "at": local_iso(at),
                "source": "customer",
            },
        )

    async def stage_changed(self, doc: dict[str, Any], source: str) -> None:
        """The customer told of the stage reached (unless they cancelled themselves); the marketing
        system told of a change it did not make itself."""
        app_no, stage_code = doc["app_no"], doc["stage"]
        if stage_code == "submitted":
            return
        service = self.catalog.get(doc["service"])
        stage = service.stage_index[stage_code]
        entry = next((h for h in reversed(doc.get("history", [])) if h["stage"] == stage_code), None)
        if stage_code == CONTRACT_STAGE:
            contract_no = doc.get("contract_no")
            page = (
                f"pages/contract/sign?contract_no={contract_no}"
                if contract_no
                else f"pages/applications/detail?app_no={app_no}&action=sign"
            )
            await self._notify(
                doc["user_id"],
                "contract_ready",
                {
                    "app_no": app_no,
                    "service_name": service.name,
                    "stage": stage["name"],
                    "contract_no": contract_no or "待生成",
                    "action": stage.get("action", ""),
                },
                page,
                f"stage:{app_no}:{stage_code}",
            )
        elif stage_code != "cancelled" or (entry or {}).get("source") != "customer":
            await self._notify(
                doc["user_id"],
                "stage_changed",
                {
                    "app_no": app_no,
                    "service_name": service.name,
                    "stage": stage["name"],
                    "note": (entry or {}).get("note", ""),
                },
                f"pages/applications/detail?app_no={app_no}",
                f"stage:{app_no}:{stage_code}",
            )
        if entry is not None and entry.get("source") not in ("marketing", "customer"):
            await self._enqueue_webhook(
                "application.stage_changed",
                f"stage:{app_no}:{stage_code}:webhook",
                {
                    "app_no": app_no,
                    "service": doc["service"],
                    "stage": stage_code,
                    "stage_name": stage["name"],
                    "operator": entry["operator"],
                    "note": entry.get("note", ""),
                    "source": entry["source"],
                    "at": local_iso(entry["at"]),
                    "contract_no": doc.get("contract_no"),
                },
            )
