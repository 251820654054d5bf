"""智能交费: the customer's balance alerts and supply timeline; the marketing system's balance
estimates and supply events."""

from __future__ import annotations

from wx_backend.services.supply import event_view

from . import spec
from .base import APIHandler, InternalHandler, authenticated


class AlertsHandler(APIHandler):
    @authenticated
    async def get(self, account_no: str) -> None:
        self.write_json({"alerts": await self.app.supply.alerts_view(self.current_user, account_no)})

    @authenticated
    async def put(self, account_no: str) -> None:
        body = self.json_body()
        self.write_json({"alerts": await self.app.supply.set_alerts(self.current_user, account_no, body)})


class SupplyTimelineHandler(APIHandler):
    @authenticated
    async def get(self, account_no: str) -> None:
        self.write_json(await self.app.supply.timeline(self.current_user, account_no))


class InternalEstimateHandler(InternalHandler):
    async def put(self, account_no: str) -> None:
        self.write_json(await self.app.supply.put_estimate(account_no, self.json_body()))


class InternalSupplyEventsHandler(InternalHandler):
    async def post(self, account_no: str) -> None:
        event, created = await self.app.supply.record_event(account_no, self.json_body())
        self.write_json({"event": event_view(event), "created": created}, status=201 if created else 200)


default_handlers = [
    (r"/api/v1/accounts/([^/]+)/alerts", AlertsHandler),
    (r"/api/v1/accounts/([^/]+)/supply", SupplyTimelineHandler),
    (r"/internal/v1/accounts/([^/]+)/balance-estimate", InternalEstimateHandler),
    (r"/internal/v1/accounts/([^/]+)/supply-events", InternalSupplyEventsHandler),
]

_NOT_FOUND = {404: ["account_not_found"]}
_ALERTS = spec.obj(
    {
        "alerts": spec.obj(
            {
                "account_no": spec.STRING,
                "billing_mode": {"type": "string", "enum": ["prepaid", "postpaid"]},
                "low_balance_fen": spec.FEN,
                "enabled": spec.BOOLEAN,
                "balance_fen": spec.nullable(spec.FEN),
                "as_of": spec.nullable(spec.DATETIME),
                "daily_fen": spec.nullable(spec.FEN),
                "days_left": spec.nullable(
                    {"type": "integer", "description": "balance // daily estimate; null when unknown"}
                ),
                "expected_cutoff_date": spec.nullable({"type": "string", "description": "YYYY-MM-DD"}),
                "supply_state": {"type": "string", "enum": ["normal", "warned", "cut_off", "reconnecting"]},
                "supply_state_label": spec.STRING,
            }
        )
    }
)
_EVENT = spec.obj(
    {"kind": spec.STRING, "label": spec.STRING, "at": spec.DATETIME, "reason": spec.nullable(spec.STRING)},
    {"cutoff_at": spec.DATETIME, "out_trade_no": spec.STRING, "amount_fen": spec.FEN},
)

openapi = {
    "/api/v1/accounts/{account_no}/alerts": {
        "get": spec.operation(
            "Balance alerts of a bound account: threshold, the balance estimate, days left, expected cut-off date",
            tag="supply",
            ok={200: _ALERTS},
            errors=_NOT_FOUND,
        ),
        "put": spec.operation(
            "Change one's low-balance threshold (fen, default 5000) or switch alerts off",
            tag="supply",
            description="Either change re-arms the alert: the next estimate below the threshold sends 余额不足.",
            body=spec.obj(optional={"low_balance_fen": {"type": "integer", "minimum": 0}, "enabled": spec.BOOLEAN}),
            ok={200: _ALERTS},
            errors={**_NOT_FOUND, 409: ["account_busy"], 422: ["validation_failed"]},
        ),
    },
    "/api/v1/accounts/{account_no}/supply": {
        "get": spec.operation(
            "The account's supply timeline: 停电预警, 已停电, 复电处理中 (with the payment), 已复电",
            tag="supply",
            ok={
                200: spec.obj(
                    {
                        "account_no": spec.STRING,
                        "state": spec.STRING,
                        "state_label": spec.STRING,
                        "events": spec.array(_EVENT),
                    }
                )
            },
            errors=_NOT_FOUND,
        ),
    },
    "/internal/v1/accounts/{account_no}/balance-estimate": {
        "put": spec.operation(
            "A prepaid account's balance estimate (marketing system); an older as_of than the one held is ignored",
            tag="internal",
            body=spec.obj(
                {"balance_fen": spec.FEN, "as_of": spec.DATETIME},
                {
                    "daily_fen": spec.nullable({"type": "integer", "minimum": 0}),
                    "cutoff_date": spec.nullable({"type": "string", "format": "date", "description": "YYYY-MM-DD"}),
                },
            ),
            ok={200: spec.obj({"estimate": {"type": "object"}, "applied": spec.BOOLEAN})},
            errors={
                404: ["account_not_found"],
                409: ["account_not_prepaid", "account_busy"],
                422: ["validation_failed"],
            },
        ),
    },
    "/internal/v1/accounts/{account_no}/supply-events": {
        "post": spec.operation(
            "A supply event (marketing system): cutoff_warning, cut_off or restored; once per kind and time",
            tag="internal",
            body=spec.obj(
                {"kind": {"type": "string", "enum": ["cutoff_warning", "cut_off", "restored"]}, "at": spec.DATETIME},
                {"reason": spec.text(100), "cutoff_at": spec.DATETIME},
            ),
            ok={
                200: spec.obj({"event": _EVENT, "created": spec.BOOLEAN}),
                201: spec.obj({"event": _EVENT, "created": spec.BOOLEAN}),
            },
            errors={404: ["account_not_found"], 409: ["account_busy"], 422: ["validation_failed"]},
        ),
    },
}
