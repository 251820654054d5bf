"""Helpers for the OpenAPI description each handler module keeps next to its handlers.

A handler module exports ``openapi = {"/api/v1/x/{id}": {"get": operation(...), ...}, ...}``;
``handlers.openapi`` assembles those into the served document and adds what the code itself
decides: the security of each operation (``@authenticated``, ``InternalHandler``,
``TerminalHandler``) and the responses every operation shares (401 of its scheme, 503). The
shared component schemas (Error, Account, ...) live here, in one place.
"""

from __future__ import annotations

from typing import Any

Schema = dict[str, Any]

STRING: Schema = {"type": "string"}
INTEGER: Schema = {"type": "integer"}
BOOLEAN: Schema = {"type": "boolean"}
DATETIME: Schema = {"type": "string", "format": "date-time"}
FEN: Schema = {"type": "integer", "description": "amount in fen (分)"}
ACCOUNT_NO: Schema = {
    "type": "string",
    "pattern": "^[0-9]{10}$",
    "description": "户号: 10 digits",
    "examples": ["9000000001"],
}
# a visible character at each end, no control characters in between
_TEXT_PATTERN = r"^[^\s\x00-\x1f\x7f-\x9f]([^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f])?$"


def text(max_length: int, min_length: int = 1) -> Schema:
    """Free text as ``validators.clean_text`` accepts it: not blank, no control characters."""
    return {"type": "string", "minLength": min_length, "maxLength": max_length, "pattern": _TEXT_PATTERN}


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


def array(items: Schema) -> Schema:
    return {"type": "array", "items": items}


def obj(
    required: dict[str, Schema] | None = None,
    optional: dict[str, Schema] | None = None,
    *,
    additional: bool = True,
    description: str | None = None,
) -> Schema:
    """An object schema: ``required`` properties must be present, ``optional`` may be."""
    props = {**(required or {}), **(optional or {})}
    schema: Schema = {"type": "object", "properties": props}
    if required:
        schema["required"] = list(required)
    if not additional:
        schema["additionalProperties"] = False
    if description:
        schema["description"] = description
    return schema


def error_response(description: str, codes: list[str] | tuple[str, ...]) -> dict[str, Any]:
    codes = sorted(set(codes))
    return {
        "description": f"{description} (error codes: {', '.join(codes)})",
        "content": {"application/json": {"schema": ref("Error")}},
        "x-error-codes": codes,
    }


_STATUS_TEXT = {
    400: "bad request",
    401: "not authenticated",
    403: "forbidden",
    404: "not found",
    409: "conflict with the current state",
    413: "payload too large",
    415: "unsupported media type",
    422: "invalid input: `details` lists each field",
    429: "too many requests",
    502: "upstream refused",
    503: "temporarily unavailable",
}


def operation(
    summary: str,
    *,
    tag: str,
    ok: dict[int, Any] | None = None,
    errors: dict[int, list[str]] | None = None,
    body: Schema | None = None,
    body_content: dict[str, Any] | None = None,
    body_required: bool = True,
    query: dict[str, Schema] | None = None,
    path: dict[str, Schema] | None = None,
    headers: dict[str, Schema] | None = None,
    description: str | None = None,
    required_query: dict[str, Schema] | None = None,
) -> dict[str, Any]:
    """One operation object.

    ``ok`` maps success statuses to a JSON schema, to ``None`` (no body) or to a ready
    ``{"description", "content"}`` response. ``errors`` maps statuses to the error codes the
    operation can answer with. ``body`` is a JSON request body; ``body_content`` any other.
    ``path`` gives schemas of path parameters (default: a string); the assembler adds the rest.
    ``query`` parameters are optional, ``required_query`` ones must be given.
    """
    responses: dict[str, Any] = {}
    for status, schema in (ok or {200: None}).items():
        if schema is None:
            responses[str(status)] = {"description": "done, no body"}
        elif "description" in schema and ("content" in schema or set(schema) == {"description"}):
            responses[str(status)] = schema
        else:
            responses[str(status)] = {"description": "success", "content": {"application/json": {"schema": schema}}}
    for status, codes in (errors or {}).items():
        responses[str(status)] = error_response(_STATUS_TEXT.get(status, "error"), codes)
    op: dict[str, Any] = {"summary": summary, "tags": [tag], "responses": responses}
    if description:
        op["description"] = description
    params = []
    for name, schema in (required_query or {}).items():
        params.append({"name": name, "in": "query", "required": True, "schema": schema})
    for name, schema in (query or {}).items():
        params.append({"name": name, "in": "query", "required": False, "schema": schema})
    for name, schema in (headers or {}).items():
        params.append({"name": name, "in": "header", "required": True, "schema": schema})
    if params:
        op["parameters"] = params
    if path:
        op["x-path-schemas"] = path
    if body is not None:
        op["requestBody"] = {"required": body_required, "content": {"application/json": {"schema": body}}}
    elif body_content is not None:
        op["requestBody"] = {"required": body_required, "content": body_content}
    return op


# -- shared component schemas ------------------------------------------------------------------
COMPONENTS: dict[str, Schema] = {
    "Error": obj(
        {
            "error": obj(
                {
                    "code": {"type": "string", "description": "stable, for programs"},
                    "message": {"type": "string", "description": "Chinese, for people"},
                },
                {
                    "details": {"description": "e.g. for 422: [{field, message}]"},
                },
            ),
        },
        additional=False,
    ),
    "FieldError": obj({"field": STRING, "message": STRING}),
    "User": obj({"id": STRING, "follows_official_account": BOOLEAN, "created_at": nullable(DATETIME)}),
    "Tariff": obj(optional={"tou": BOOLEAN, "two_part": BOOLEAN, "max_demand": BOOLEAN}),
    "Account": obj(
        {
            "account_no": ACCOUNT_NO,
            "holder_name": {"type": "string", "description": "masked: *威"},
            "phone": nullable({"type": "string", "description": "masked: 139****0490"}),
            "address": nullable(STRING),
            "region": nullable(STRING),
            "feeder": nullable(STRING),
            "customer_class": nullable(STRING),
            "tariff": nullable(ref("Tariff")),
            "capacity_kva": nullable({"type": "number"}),
            "balance_fen": FEN,
        },
        {
            "billing_mode": {"type": "string", "enum": ["prepaid", "postpaid"]},
            "role": nullable(STRING),
            "bound_at": nullable(DATETIME),
            "proof": nullable({"type": "string", "enum": ["sms", "wechat_phone"], "description": "how it was bound"}),
            "remark": nullable({"type": "string", "description": "the user's own remark (家, 门店)"}),
            "is_default": {"type": "boolean", "description": "used when a request names no account"},
        },
    ),
    "AccountCandidate": obj(
        {
            "candidate_id": {"type": "string", "description": "the user's own handle for binding, 30 minutes"},
            "source": {"type": "string", "enum": ["proposal", "search", "meter"]},
            "account_no": {"type": "string", "description": "masked: 526****002"},
            "holder_name": {"type": "string", "description": "masked: *威"},
            "address": {"type": "string", "description": "shortened, digits hidden"},
            "region": nullable(STRING),
            "bound": BOOLEAN,
            "needs_sms": BOOLEAN,
            "expires_in": INTEGER,
        }
    ),
    "Upload": obj(
        {"file_id": STRING, "content_type": STRING, "size": INTEGER, "sha256": STRING, "kind": nullable(STRING)}
    ),
    "ServiceSummary": obj({"code": STRING, "name": STRING}),
    "Application": obj(
        {
            "app_no": STRING,
            "service": STRING,
            "service_name": STRING,
            "account_no": nullable(STRING),
            "stage": STRING,
            "stage_name": STRING,
            "status": STRING,
            "status_name": STRING,
            "contract_no": nullable(STRING),
            "created_at": STRING,
            "updated_at": STRING,
            "can_cancel": BOOLEAN,
        },
        {
            "next_action": {},
            "applicant": {"type": "object", "description": "ID numbers and phones masked"},
            "form": {"type": "object"},
            "fields": array(obj({"path": STRING, "label": STRING})),
            "attachments": array({"type": "object"}),
            "history": array({"type": "object"}),
        },
    ),
    "Outage": obj(
        {
            "outage_id": STRING,
            "kind": STRING,
            "status": STRING,
            "regions": array(STRING),
            "feeders": array(STRING),
            "start": STRING,
            "end": STRING,
            "reason": STRING,
            "version": INTEGER,
        },
        {"ref": nullable(STRING), "area": nullable(STRING), "published_at": STRING, "updated_at": STRING},
    ),
    "Payment": obj(
        {"out_trade_no": STRING, "account_no": STRING, "amount_fen": FEN, "channel": STRING, "status": STRING}
    ),
    "Contract": obj(
        {
            "contract_no": STRING,
            "app_no": STRING,
            "account_no": STRING,
            "template": STRING,
            "title": STRING,
            "status": STRING,
            "status_label": STRING,
        },
        {"term_months": INTEGER, "parties": {"type": "object"}, "signatures": array({"type": "object"})},
    ),
    "InternalContract": obj(
        {
            "contract_no": STRING,
            "app_no": STRING,
            "account_no": STRING,
            "template": STRING,
            "title": STRING,
            "status": STRING,
            "status_label": STRING,
            "terms": {"type": "object"},
            "files": obj(
                {
                    "draft": obj({"sha256": STRING, "size": INTEGER}),
                    "signed": nullable(obj({"sha256": STRING, "size": INTEGER})),
                }
            ),
        },
        {
            "term_months": INTEGER,
            "start_date": nullable(STRING),
            "end_date": nullable(STRING),
            "parties": {"type": "object"},
            "signatures": array({"type": "object"}),
            "signed_at": nullable(STRING),
            "pdf_url": STRING,
        },
    ),
    "Seal": obj(
        {"seal_id": STRING, "kind": STRING, "org_name": STRING, "status": STRING},
        {
            "title": STRING,
            "credit_code": STRING,
            "legal_rep": STRING,
            "mobile": {"type": "string", "description": "masked"},
            "status_label": STRING,
        },
    ),
    "SmsSent": obj({"sent_to": {"type": "string", "description": "masked mobile"}, "expires_in": INTEGER}),
}
