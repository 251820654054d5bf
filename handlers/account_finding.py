"""Finding one's account without its number: proposals, 模糊查询, meter barcode, and binding a candidate.

This module's name sorts before ``accounts``, so ``/api/v1/accounts/proposals`` and
``/api/v1/accounts/search`` are routed here before ``/api/v1/accounts/{account_no}`` can take them.
"""

from __future__ import annotations

from wx_backend.services.account_finder import MAX_QUERY, MIN_QUERY

from . import spec
from .base import APIHandler, authenticated


class ProposalsHandler(APIHandler):
    @authenticated
    async def get(self) -> None:
        self.write_json(await self.app.finder.proposals(self.current_user))


class SearchHandler(APIHandler):
    @authenticated
    async def get(self) -> None:
        self.write_json(
            await self.app.finder.search(
                self.current_user, self.get_argument("region", None), self.get_argument("q", None)
            )
        )


class ByMeterHandler(APIHandler):
    @authenticated
    async def get(self, meter_no: str) -> None:
        self.write_json(await self.app.finder.by_meter(self.current_user, meter_no))


class CandidateHandler(APIHandler):
    @authenticated
    async def post(self, candidate_id: str) -> None:
        body = self.json_body()
        account = await self.app.finder.bind(
            self.current_user, candidate_id, body.get("holder_name"), body.get("sms_code")
        )
        created = account.pop("created")
        self.write_json({"account": account}, status=201 if created else 200)


class CandidateCodeHandler(APIHandler):
    @authenticated
    async def post(self, candidate_id: str) -> None:
        self.write_json(await self.app.finder.send_code(self.current_user, candidate_id), status=201)


default_handlers = [
    (r"/api/v1/accounts/proposals", ProposalsHandler),
    (r"/api/v1/accounts/search", SearchHandler),
    (r"/api/v1/accounts/by-meter/([^/]+)", ByMeterHandler),
    (r"/api/v1/accounts/candidates/([^/]+)", CandidateHandler),
    (r"/api/v1/accounts/candidates/([^/]+)/sms-code", CandidateCodeHandler),
]

_CANDIDATES = spec.obj({"candidates": spec.array(spec.ref("AccountCandidate")), "more": spec.BOOLEAN})
_ACCOUNT = spec.obj({"account": spec.ref("Account")})
_LIMITED = {422: ["validation_failed"], 429: ["too_many_requests"]}

openapi = {
    "/api/v1/accounts/proposals": {
        "get": spec.operation(
            "Accounts registered to the user's verified mobile, not yet bound (masked)",
            tag="accounts",
            ok={200: spec.obj({"phone": spec.STRING, "proposals": spec.array(spec.ref("AccountCandidate"))})},
            errors={409: ["phone_not_verified"]},
        ),
    },
    "/api/v1/accounts/search": {
        "get": spec.operation(
            "模糊查询: at most 5 accounts of a region by a fragment of the holder name or address",
            tag="accounts",
            description="`q` is 2 to 50 characters. 10 searches an hour and 30 a day per user "
            "(429 `too_many_requests` after); see docs/accounts.md.",
            required_query={"region": spec.text(50), "q": spec.text(MAX_QUERY, MIN_QUERY)},
            ok={200: _CANDIDATES},
            errors=_LIMITED,
        ),
    },
    "/api/v1/accounts/by-meter/{meter_no}": {
        "get": spec.operation(
            "The account of a meter's barcode (asset number), masked",
            tag="accounts",
            description="10 lookups an hour and 30 a day per user; see docs/accounts.md.",
            path={"meter_no": {"type": "string", "pattern": "^[0-9A-Za-z]{6,32}$"}},
            ok={200: spec.obj({"candidate": spec.ref("AccountCandidate")})},
            errors={**_LIMITED, 404: ["meter_not_found"]},
        ),
    },
    "/api/v1/accounts/candidates/{candidate_id}": {
        "post": spec.operation(
            "Bind a found account",
            tag="accounts",
            description="A proposal needs no body (the verified mobile is the proof); a search or meter "
            "candidate needs the holder name and a code sent by "
            "`POST /api/v1/accounts/candidates/{candidate_id}/sms-code`.",
            body=spec.obj(
                optional={"holder_name": spec.STRING, "sms_code": {"type": "string", "pattern": "^[0-9]{6}$"}}
            ),
            ok={201: _ACCOUNT, 200: _ACCOUNT},
            errors={
                400: ["sms_code_invalid", "sms_code_expired", "sms_code_exhausted"],
                404: ["candidate_not_found", "account_not_found"],
                409: ["too_many_accounts", "account_busy", "phone_not_verified"],
                422: ["validation_failed", "holder_name_mismatch"],
            },
        ),
    },
    "/api/v1/accounts/candidates/{candidate_id}/sms-code": {
        "post": spec.operation(
            "Text a binding code to the found account's phone on record",
            tag="accounts",
            ok={201: spec.ref("SmsSent")},
            errors={
                404: ["candidate_not_found", "account_not_found"],
                422: ["validation_failed"],
                429: ["too_many_requests"],
                503: ["sms_unavailable"],
            },
        ),
    },
}
