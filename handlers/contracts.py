"""Electronic contracts: the customer's list, detail, PDF, 合同签章 preview, 确认并盖章 and
verification; the marketing system's issue (``/internal/v1/applications/{app_no}/contract``)."""

from __future__ import annotations

import tornado.httputil

from wx_backend.errors import BadRequest, ValidationFailed

from .base import APIHandler, InternalHandler, authenticated


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
        contract = await self.app.contracts.confirm(self.current_user, contract_no, body.get("preview_id"))
        self.write_json({"contract": contract})


class ContractVerifyHandler(APIHandler):
    """A PDF as ``multipart/form-data`` (one ``file`` part) or as the raw ``application/pdf`` body."""

    @authenticated
    async def post(self) -> None:
        ctype = self.request.headers.get("Content-Type", "")
        if ctype.startswith("multipart/form-data"):
            args: dict = {}
            parts: dict = {}
            try:
                tornado.httputil.parse_body_arguments(ctype, self.request.body, args, parts)
            except tornado.httputil.HTTPInputError as exc:
                raise BadRequest("上传内容格式不正确", code="invalid_multipart") from exc
            uploaded = parts.get("file") or []
            if len(uploaded) != 1:
                raise ValidationFailed(details=[{"field": "file", "message": "请上传一个 PDF 文件"}])
            data = uploaded[0].body
        elif ctype.split(";")[0].strip() == "application/pdf":
            data = self.request.body
        else:
            raise BadRequest("请以 application/pdf 或 multipart/form-data 上传 PDF", code="unsupported_media_type",
                             status=415)
        self.write_json({"report": await self.app.contracts.verify(data)})


class InternalContractHandler(InternalHandler):
    async def post(self, app_no: str) -> None:
        body = self.json_body()
        operator = body.pop("operator", None) or "marketing"
        doc, created = await self.app.contracts.issue(app_no, body, operator=str(operator)[:50])
        self.write_json({"contract": self.app.contracts.view(doc), "created": created},
                        status=201 if created else 200)


default_handlers = [
    (r"/api/v1/contracts", ContractsHandler),
    (r"/api/v1/contracts/verify", ContractVerifyHandler),
    (r"/api/v1/contracts/([^/]+)", ContractHandler),
    (r"/api/v1/contracts/([^/]+)/pdf", ContractPdfHandler),
    (r"/api/v1/contracts/([^/]+)/preview", ContractPreviewHandler),
    (r"/api/v1/contracts/([^/]+)/previews/([^/]+)/pdf", ContractPreviewPdfHandler),
    (r"/api/v1/contracts/([^/]+)/confirm", ContractConfirmHandler),
    (r"/internal/v1/applications/([^/]+)/contract", InternalContractHandler),
]
