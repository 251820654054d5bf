"""Electronic contracts: the customer's list, detail, PDF, 合同签章 preview, 确认并盖章 and
verification; the marketing system's issue (``/internal/v1/applications/{app_no}/contract``)."""

from __future__ import annotations

from wx_backend import timing
from wx_backend.bodies import LARGE_BODY
from wx_backend.errors import BadRequest

from . import spec
from .base import APIHandler, InternalHandler, authenticated
from .multipart import one_file


def _pdf(handler: APIHandler, data: bytes, filename: str, sha256: str | None = None) -> None:
    handler.set_header("Content-Type", "application/pdf")
    handler.set_header("Content-Disposition", f'inline; filename="{filename}"')
    handler.set_header("Cache-Control", "private, no-store")
    handler.set_header("X-Content-Type-Options", "nosniff")
    if sha256:
        handler.set_header("X-Content-SHA256", sha256)
    handler.finish(data)


class ContractsHandler(APIHandler):
    @authenticated
    async def get(self) -> None:
        self.write_json({"contracts": await self.app.contracts.list_for_user(self.current_user)})


class ContractHandler(APIHandler):
    @authenticated
    async def get(self, contract_no: str) -> None:
        doc = await self.app.contracts.get_owned(self.current_user, contract_no)
        self.write_json({"contract": self.app.contracts.view(doc)})


class ContractPdfHandler(APIHandler):
    @authenticated
    async def get(self, contract_no: str) -> None:
        info, data = await self.app.contracts.current_pdf(self.current_user, contract_no)
        _pdf(self, data, f"{contract_no}.pdf", info["sha256"])


class ContractPreviewHandler(APIHandler):
    @authenticated
    async def post(self, contract_no: str) -> None:
        preview = await self.app.contracts.preview(self.current_user, contract_no, self.json_body())
        self.write_json({"preview": preview}, status=201)


class ContractPreviewPdfHandler(APIHandler):
    @authenticated
    async def get(self, contract_no: str, preview_id: str) -> None:
        data = await self.app.contracts.preview_pdf(self.current_user, contract_no, preview_id)
        _pdf(self, data, f"{contract_no}-preview.pdf")


class ContractConfirmHandler(APIHandler):
    @authenticated
    async def post(self, contract_no: str) -> None:
        body = self.json_body()
        with timing.collect() as spent:
            contract = await self.app.contracts.confirm(self.current_user, contract_no, body.get("preview_id"))
        # where the time went: queue / pdf / transfer (document pool), storage, followups, other
        self.set_header("Server-Timing", spent.header(1000 * self.request.request_time()))
        self.write_json({"contract": contract})


class ContractVerifyHandler(APIHandler):
    """A PDF as ``multipart/form-data`` (one ``file`` part) or as the raw ``application/pdf`` body."""

    max_body_bytes = LARGE_BODY

    @authenticated
    async def post(self) -> None:
        ctype = self.request.headers.get("Content-Type", "")
        if ctype.startswith("multipart/form-data"):
            data = one_file(ctype, self.request.body, "请上传一个 PDF 文件")[1].body
        elif ctype.split(";")[0].strip() == "application/pdf":
            data = self.request.body
        else:
            raise BadRequest(
                "请以 application/pdf 或 multipart/form-data 上传 PDF", code="unsupported_media_type", status=415
            )
        self.write_json({"report": await self.app.contracts.verify(data)})


class InternalContractHandler(InternalHandler):
    async def get(self, app_no: str) -> None:
        doc = await self.app.contracts.for_application(app_no)
        self.write_json({"contract": self.app.contracts.internal_view(doc)})

    async def post(self, app_no: str) -> None:
        body = self.json_body()
        operator = body.pop("operator", None) or "marketing"
        doc, created = await self.app.contracts.issue(app_no, body, operator=str(operator)[:50])
        self.write_json({"contract": self.app.contracts.view(doc), "created": created}, status=201 if created else 200)


class InternalContractReadHandler(InternalHandler):
    async def get(self, contract_no: str) -> None:
        doc = await self.app.contracts.get(contract_no)
        self.write_json({"contract": self.app.contracts.internal_view(doc)})


class InternalContractPdfHandler(InternalHandler):
    async def get(self, contract_no: str) -> None:
        info, data = await self.app.contracts.any_pdf(contract_no)
        _pdf(self, data, f"{contract_no}.pdf", info["sha256"])


default_handlers = [
    (r"/api/v1/contracts", ContractsHandler),
    (r"/api/v1/contracts/verify", ContractVerifyHandler),
    (r"/api/v1/contracts/([^/]+)", ContractHandler),
    (r"/api/v1/contracts/([^/]+)/pdf", ContractPdfHandler),
    (r"/api/v1/contracts/([^/]+)/preview", ContractPreviewHandler),
    (r"/api/v1/contracts/([^/]+)/previews/([^/]+)/pdf", ContractPreviewPdfHandler),
    (r"/api/v1/contracts/([^/]+)/confirm", ContractConfirmHandler),
    (r"/internal/v1/applications/([^/]+)/contract", InternalContractHandler),
    (r"/internal/v1/contracts/([^/]+)", InternalContractReadHandler),
    (r"/internal/v1/contracts/([^/]+)/pdf", InternalContractPdfHandler),
]

_NOT_FOUND = ["contract_not_found"]
_CONTRACT = spec.obj({"contract": spec.ref("Contract")})
_PDF = {
    "description": "the PDF",
    "content": {"application/pdf": {"schema": {"type": "string", "contentMediaType": "application/pdf"}}},
}

openapi = {
    "/api/v1/contracts": {
        "get": spec.operation(
            "The user's contracts", tag="contracts", ok={200: spec.obj({"contracts": spec.array(spec.ref("Contract"))})}
        ),
    },
    "/api/v1/contracts/verify": {
        "post": spec.operation(
            "Verify a signed contract PDF (signatures, certificates, changes after signing)",
            tag="contracts",
            body_content={
                "application/pdf": {"schema": {"type": "string", "contentMediaType": "application/pdf"}},
                "multipart/form-data": {
                    "schema": spec.obj({"file": {"type": "string", "contentMediaType": "application/pdf"}})
                },
            },
            ok={200: spec.obj({"report": {"type": "object"}})},
            errors={
                400: ["invalid_multipart"],
                413: ["payload_too_large"],
                415: ["unsupported_media_type", "unsupported_file_type"],
                422: ["validation_failed", "empty_file"],
            },
        ),
    },
    "/api/v1/contracts/{contract_no}": {
        "get": spec.operation(
            "One of the user's contracts: status, parties, term, signatures",
            tag="contracts",
            ok={200: _CONTRACT},
            errors={404: _NOT_FOUND},
        ),
    },
    "/api/v1/contracts/{contract_no}/pdf": {
        "get": spec.operation(
            "The contract's PDF: signed once effective, else the draft",
            tag="contracts",
            ok={200: _PDF},
            errors={404: _NOT_FOUND},
        ),
    },
    "/api/v1/contracts/{contract_no}/preview": {
        "post": spec.operation(
            "合同签章 preview: the chosen seal and a signature drawn on the draft, NOT signed",
            tag="contracts",
            body=spec.obj(
                {
                    "seal_id": spec.STRING,
                    "signature": spec.obj(
                        {"type": {"type": "string", "enum": ["typed", "image"]}},
                        {"name": spec.STRING, "file_id": spec.STRING},
                    ),
                }
            ),
            ok={
                201: spec.obj(
                    {
                        "preview": spec.obj(
                            {
                                "preview_id": spec.STRING,
                                "contract_no": spec.STRING,
                                "pdf_url": spec.STRING,
                                "signed": spec.BOOLEAN,
                            }
                        )
                    }
                )
            },
            errors={
                404: [*_NOT_FOUND, "seal_not_found", "file_not_found"],
                409: [
                    "contract_already_signed",
                    "contract_cancelled",
                    "contract_signing_in_progress",
                    "seal_revoked",
                    "seal_expired",
                ],
                422: ["validation_failed", "signature_image_invalid"],
            },
        ),
    },
    "/api/v1/contracts/{contract_no}/previews/{preview_id}/pdf": {
        "get": spec.operation(
            "A preview's PDF (visual only, not signed)",
            tag="contracts",
            ok={200: _PDF},
            errors={404: [*_NOT_FOUND, "preview_not_found"], 410: ["preview_expired"]},
        ),
    },
    "/api/v1/contracts/{contract_no}/confirm": {
        "post": spec.operation(
            "确认并盖章: sign the previewed contract (PAdES with the seal), then the utility countersigns",
            tag="contracts",
            body=spec.obj({"preview_id": spec.STRING}),
            ok={200: _CONTRACT},
            errors={
                404: [*_NOT_FOUND, "preview_not_found"],
                409: [
                    "contract_already_signed",
                    "contract_cancelled",
                    "contract_signing_in_progress",
                    "seal_revoked",
                    "seal_expired",
                    "preview_expired",
                ],
                422: ["validation_failed"],
                500: ["sealing_failed"],
            },
        ),
    },
    "/internal/v1/contracts/{contract_no}": {
        "get": spec.operation(
            "A contract for the marketing system: status, parties, terms, signatures with their times, "
            "SHA-256 of the draft and the signed PDF",
            tag="internal",
            ok={200: spec.obj({"contract": spec.ref("InternalContract")})},
            errors={404: _NOT_FOUND},
        ),
    },
    "/internal/v1/contracts/{contract_no}/pdf": {
        "get": spec.operation(
            "The contract's PDF: signed once effective, else the draft (X-Content-SHA256: its hash)",
            tag="internal",
            ok={200: _PDF},
            errors={404: _NOT_FOUND},
        ),
    },
    "/internal/v1/applications/{app_no}/contract": {
        "get": spec.operation(
            "The contract issued for a work order (marketing system)",
            tag="internal",
            ok={200: spec.obj({"contract": spec.ref("InternalContract")})},
            errors={404: ["application_not_found", "contract_not_found"]},
        ),
        "post": spec.operation(
            "Issue the application's contract for signing (marketing system); idempotent per application",
            tag="internal",
            body=spec.obj(
                {"template": spec.STRING, "terms": {"type": "object"}},
                {"term_months": spec.INTEGER, "operator": spec.STRING},
            ),
            ok={
                201: spec.obj({"contract": spec.ref("Contract"), "created": spec.BOOLEAN}),
                200: spec.obj({"contract": spec.ref("Contract"), "created": spec.BOOLEAN}),
            },
            errors={
                404: ["application_not_found"],
                409: ["invalid_stage_transition", "contract_issue_in_progress", "stage_conflict"],
                422: ["validation_failed", "contract_terms_invalid"],
            },
        ),
    },
}
