"""电子发票: invoice titles, the request for a payment's invoice, the customer's invoices and
their PDF and e-mail; the marketing system's issued invoice or refusal."""

from __future__ import annotations

from wx_backend.bodies import LARGE_BODY
from wx_backend.services.invoices import invoice_view

from . import spec
from .base import APIHandler, InternalHandler, authenticated


class TitlesHandler(APIHandler):
    @authenticated
    async def get(self) -> None:
        self.write_json({"titles": await self.app.invoices.list_titles(self.current_user)})

    @authenticated
    async def post(self) -> None:
        self.write_json(
            {"title": await self.app.invoices.create_title(self.current_user, self.json_body())}, status=201
        )


class TitleHandler(APIHandler):
    @authenticated
    async def put(self, title_id: str) -> None:
        title = await self.app.invoices.update_title(self.current_user, title_id, self.json_body())
        self.write_json({"title": title})

    @authenticated
    async def delete(self, title_id: str) -> None:
        await self.app.invoices.delete_title(self.current_user, title_id)
        self.set_status(204)
        self.finish()


class PaymentInvoiceHandler(APIHandler):
    @authenticated
    async def post(self, out_trade_no: str) -> None:
        doc, created = await self.app.invoices.request(self.current_user, out_trade_no, self.json_body())
        self.write_json({"invoice": invoice_view(doc), "created": created}, status=201 if created else 200)


class InvoicesHandler(APIHandler):
    @authenticated
    async def get(self) -> None:
        self.write_json({"invoices": await self.app.invoices.list_for_user(self.current_user)})


class InvoiceHandler(APIHandler):
    @authenticated
    async def get(self, invoice_id: str) -> None:
        self.write_json({"invoice": invoice_view(await self.app.invoices.get_owned(self.current_user, invoice_id))})


class InvoicePdfHandler(APIHandler):
    @authenticated
    async def get(self, invoice_id: str) -> None:
        meta, chunks = await self.app.invoices.open_pdf(self.current_user, invoice_id)
        self.set_header("Content-Type", "application/pdf")
        self.set_header("Content-Length", str(meta["size"]))
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Cache-Control", "private, no-store")
        self.set_header("Content-Disposition", f'attachment; filename="{meta["invoice_no"]}.pdf"')
        async for chunk in chunks:
            self.write(chunk)
            await self.flush()
        self.finish()


class InvoiceEmailHandler(APIHandler):
    @authenticated
    async def post(self, invoice_id: str) -> None:
        result = await self.app.invoices.send_email(self.current_user, invoice_id, self.json_body())
        self.write_json(result, status=202)


class InternalInvoiceHandler(InternalHandler):
    max_body_bytes = LARGE_BODY  # the issued invoice's PDF, base64

    async def put(self, invoice_id: str) -> None:
        doc, changed = await self.app.invoices.record_outcome(invoice_id, self.json_body())
        self.write_json({"invoice": invoice_view(doc), "changed": changed})


_ID = r"([A-Za-z0-9_-]{1,40})"
default_handlers = [
    (r"/api/v1/invoice-titles", TitlesHandler),
    (rf"/api/v1/invoice-titles/{_ID}", TitleHandler),
    (r"/api/v1/payments/([A-Za-z0-9_-]{1,32})/invoice", PaymentInvoiceHandler),
    (r"/api/v1/invoices", InvoicesHandler),
    (rf"/api/v1/invoices/{_ID}", InvoiceHandler),
    (rf"/api/v1/invoices/{_ID}/pdf", InvoicePdfHandler),
    (rf"/api/v1/invoices/{_ID}/email", InvoiceEmailHandler),
    (rf"/internal/v1/invoices/{_ID}", InternalInvoiceHandler),
]

_TITLE_ID = {"title_id": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,40}$"}}
_INVOICE_ID = {"invoice_id": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,40}$"}}
_TITLE_BODY = spec.obj(
    {"kind": {"type": "string", "enum": ["personal", "company"]}, "name": spec.STRING},
    {
        "tax_no": {"type": "string", "description": "税号: an 18-character unified social credit code (company only)"},
        "address": spec.STRING,
        "phone": spec.STRING,
        "bank": spec.STRING,
        "bank_account": spec.STRING,
        "email": spec.STRING,
    },
)
_TITLE = spec.obj(
    {"title_id": spec.STRING, "kind": spec.STRING, "name": spec.STRING},
    {
        "tax_no": spec.STRING,
        "address": spec.STRING,
        "phone": spec.STRING,
        "bank": spec.STRING,
        "bank_account": spec.STRING,
        "email": spec.STRING,
    },
)
_INVOICE = spec.obj(
    {
        "invoice_id": spec.STRING,
        "out_trade_no": spec.STRING,
        "account_no": spec.STRING,
        "amount_fen": spec.FEN,
        "status": {"type": "string", "enum": ["requested", "issued", "refused"]},
        "status_label": spec.STRING,
        "title": {"type": "object"},
        "requested_at": spec.DATETIME,
        "invoice_no": spec.nullable(spec.STRING),
        "issued_on": spec.nullable(spec.STRING),
        "refusal": spec.nullable(spec.STRING),
        "pdf": spec.nullable({"type": "string", "description": "path of the PDF once issued"}),
    }
)
_TITLE_NOT_FOUND = {404: ["invoice_title_not_found"]}
_INVOICE_NOT_FOUND = {404: ["invoice_not_found"]}

openapi = {
    "/api/v1/invoice-titles": {
        "get": spec.operation(
            "One's invoice titles (发票抬头)", tag="invoices", ok={200: spec.obj({"titles": spec.array(_TITLE)})}
        ),
        "post": spec.operation(
            "Add an invoice title: personal (name) or company (name + 税号, optional 专票 details), optional e-mail",
            tag="invoices",
            body=_TITLE_BODY,
            ok={201: spec.obj({"title": _TITLE})},
            errors={409: ["too_many_invoice_titles"], 422: ["validation_failed"]},
        ),
    },
    "/api/v1/invoice-titles/{title_id}": {
        "put": spec.operation(
            "Replace one's invoice title",
            tag="invoices",
            path=_TITLE_ID,
            body=_TITLE_BODY,
            ok={200: spec.obj({"title": _TITLE})},
            errors={**_TITLE_NOT_FOUND, 422: ["validation_failed"]},
        ),
        "delete": spec.operation(
            "Delete one's invoice title (requested invoices keep their copy)",
            tag="invoices",
            path=_TITLE_ID,
            ok={204: None},
            errors=_TITLE_NOT_FOUND,
        ),
    },
    "/api/v1/payments/{out_trade_no}/invoice": {
        "post": spec.operation(
            "Request the e-invoice of one's credited payment; one per payment, asking again answers the same",
            tag="invoices",
            path={"out_trade_no": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,32}$"}},
            body=spec.obj({"title_id": spec.STRING}),
            ok={
                200: spec.obj({"invoice": _INVOICE, "created": spec.BOOLEAN}),
                201: spec.obj({"invoice": _INVOICE, "created": spec.BOOLEAN}),
            },
            errors={
                404: ["payment_not_found", "invoice_title_not_found"],
                409: ["payment_not_credited", "payment_refunded", "invoice_already_requested", "invoice_busy"],
                422: ["validation_failed"],
            },
        ),
    },
    "/api/v1/invoices": {
        "get": spec.operation(
            "One's invoices, newest request first",
            tag="invoices",
            ok={200: spec.obj({"invoices": spec.array(_INVOICE)})},
        ),
    },
    "/api/v1/invoices/{invoice_id}": {
        "get": spec.operation(
            "One of one's invoices",
            tag="invoices",
            path=_INVOICE_ID,
            ok={200: spec.obj({"invoice": _INVOICE})},
            errors=_INVOICE_NOT_FOUND,
        ),
    },
    "/api/v1/invoices/{invoice_id}/pdf": {
        "get": spec.operation(
            "The issued invoice's PDF (the payment's owner only)",
            tag="invoices",
            path=_INVOICE_ID,
            ok={
                200: {
                    "description": "the PDF",
                    "content": {
                        "application/pdf": {"schema": {"type": "string", "contentMediaType": "application/pdf"}}
                    },
                }
            },
            errors={**_INVOICE_NOT_FOUND, 409: ["invoice_not_issued"]},
        ),
    },
    "/api/v1/invoices/{invoice_id}/email": {
        "post": spec.operation(
            "E-mail the issued invoice (PDF attached) to `email` or the title's address; once per address a day",
            tag="invoices",
            path=_INVOICE_ID,
            body=spec.obj(optional={"email": spec.STRING}),
            body_required=False,
            ok={202: spec.obj({"queued": spec.BOOLEAN, "to": {"type": "string", "description": "masked"}})},
            errors={
                **_INVOICE_NOT_FOUND,
                409: ["invoice_not_issued"],
                422: ["validation_failed"],
                503: ["email_unavailable"],
            },
        ),
    },
    "/internal/v1/invoices/{invoice_id}": {
        "put": spec.operation(
            "The issued invoice (number, amount, date, PDF in base64) or a refusal with a reason (marketing system)",
            tag="internal",
            path=_INVOICE_ID,
            body=spec.obj(
                {"status": {"type": "string", "enum": ["issued", "refused"]}},
                {
                    "invoice_no": spec.STRING,
                    "amount_fen": spec.FEN,
                    "issued_on": {"type": "string", "description": "YYYY-MM-DD"},
                    "pdf_base64": spec.STRING,
                    "reason": spec.STRING,
                },
            ),
            ok={200: spec.obj({"invoice": _INVOICE, "changed": spec.BOOLEAN})},
            errors={
                404: ["invoice_not_found"],
                409: ["invoice_already_decided", "invoice_busy"],
                422: ["validation_failed", "invoice_amount_mismatch"],
            },
        ),
    },
}
