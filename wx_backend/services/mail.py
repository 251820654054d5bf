"""Invoice e-mail over SMTP, sent from the outbox (kind ``email``) with aiosmtplib.

``WX_SMTP_URL`` names the server: ``smtp://[user:password@]host[:port]`` (port 25; STARTTLS
when the server offers it), ``smtp+starttls://...`` (port 587; STARTTLS required) or
``smtps://...`` (port 465; TLS from the start). Certificates are verified against
``WX_SMTP_CA_FILE`` or the system's CAs. The message is in Chinese with the invoice PDF
attached. A server that cannot be reached or answers 4xx is tried again by the outbox's
schedule; a 5xx answer (the address refused) is final.
"""

from __future__ import annotations

import ssl
from email.message import EmailMessage
from email.utils import formataddr, make_msgid
from typing import Any
from urllib.parse import unquote, urlsplit

import aiosmtplib

from ..config import Config, ConfigError
from .notifications import Outcome, attempt

SUBJECT = "电子发票：{invoice_no}（户号 {account_no}）"
SENDER_NAME = "网上营业厅电子发票"


class MailSettings:
    def __init__(self, url: str, sender: str = "", ca_file: str = ""):
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtp+starttls", "smtps") or not parts.hostname:
            raise ConfigError("WX_SMTP_URL must be smtp://, smtp+starttls:// or smtps://host[:port]")
        if ca_file:
            try:
                ssl.create_default_context(cafile=ca_file)
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(f"WX_SMTP_CA_FILE: cannot read {ca_file}: {exc}") from exc
        self.hostname = parts.hostname
        self.use_tls = parts.scheme == "smtps"
        self.start_tls: bool | None = True if parts.scheme == "smtp+starttls" else (False if self.use_tls else None)
        self.port = parts.port or {"smtp": 25, "smtp+starttls": 587, "smtps": 465}[parts.scheme]
        self.username = unquote(parts.username) if parts.username else None
        self.password = unquote(parts.password) if parts.password else None
        self.sender = sender or (
            self.username if self.username and "@" in self.username else f"invoice@{self.hostname}"
        )
        self.tls_context = ssl.create_default_context(cafile=ca_file or None)


def compose(invoice: dict[str, Any], to: str, pdf: bytes, sender: str) -> EmailMessage:
    """The e-mail of an issued invoice: Chinese subject and text, the PDF attached."""
    amount = invoice["amount_fen"]
    message = EmailMessage()
    message["Subject"] = SUBJECT.format(invoice_no=invoice["invoice_no"], account_no=invoice["account_no"])
    message["From"] = formataddr((SENDER_NAME, sender))
    message["To"] = to
    message["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or None)
    message.set_content(
        f"尊敬的客户：\n\n"
        f"您为户号 {invoice['account_no']} 交纳的电费已开具电子发票，请查收附件。\n\n"
        f"发票号码：{invoice['invoice_no']}\n"
        f"开票日期：{invoice['issued_on']}\n"
        f"发票金额：{amount // 100}.{amount % 100:02d} 元\n"
        f"购买方：{invoice['title']['name']}\n\n"
        f"本邮件由系统自动发送，请勿回复。\n",
        charset="utf-8",
    )
    message.add_attachment(pdf, maintype="application", subtype="pdf", filename=f"电子发票-{invoice['invoice_no']}.pdf")
    return message


def check_config(config: Config) -> None:
    """A malformed ``WX_SMTP_URL`` or unreadable CA file stops start-up with its name."""
    if config.smtp_url:
        MailSettings(config.smtp_url, config.smtp_from, config.smtp_ca_file)


class MailSender:
    """The outbox's ``email`` channel."""

    def __init__(self, config: Config, invoices: Any):
        self.settings = (
            MailSettings(config.smtp_url, config.smtp_from, config.smtp_ca_file) if config.smtp_url else None
        )
        self.invoices = invoices  # InvoiceService: the invoice and its PDF
        self.timeout = max(config.wechat_timeout, 5.0)

    async def deliver(self, doc: dict[str, Any]) -> Outcome:
        if self.settings is None:
            return Outcome("skipped", [attempt("email", "not_configured")])
        payload = doc["payload"]
        invoice = await self.invoices.db.invoices.find_one({"_id": payload.get("invoice_id")})
        if invoice is None or invoice.get("status") != "issued":
            return Outcome("failed", [attempt("email", "no_invoice")])
        pdf = await self.invoices.read_pdf(invoice)
        s = self.settings
        message = compose(invoice, payload["to"], pdf, s.sender)
        try:
            await aiosmtplib.send(
                message,
                hostname=s.hostname,
                port=s.port,
                username=s.username,
                password=s.password,
                use_tls=s.use_tls,
                start_tls=s.start_tls,
                tls_context=s.tls_context,
                timeout=self.timeout,
            )
        except aiosmtplib.SMTPResponseException as exc:
            if 500 <= exc.code < 600:
                return Outcome("failed", [attempt("email", "refused", status=exc.code)])
            return Outcome("retry", [attempt("email", "retry", status=exc.code)])
        except aiosmtplib.SMTPRecipientsRefused:
            return Outcome("failed", [attempt("email", "refused", detail="recipient")])
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            return Outcome("retry", [attempt("email", "retry", detail=type(exc).__name__)])
        return Outcome("sent", [attempt("email", "sent")], {"channel": "email"})
