"""The outgoing webhook to the marketing system, sent from the outbox (kind ``webhook``).

The body is the JSON ``{"event", "body"}``; headers ``X-Timestamp``, ``X-Nonce`` and
``X-Signature`` are the same HMAC-SHA256 scheme as ``/internal/v1`` (docs/internal-api.md), made by
``wx_backend.security.request_signature`` over the URL's path; ``X-Event-Id`` is the
outbox dedupe key so the receiver can drop a repeat. 2xx is delivered; timeouts, refused
connections and 5xx are retried; other answers are final (``failed``). With no
``WX_WEBHOOK_URL`` configured the message is recorded ``skipped``.
"""

from __future__ import annotations

import json
import secrets
import time
from typing import Any
from urllib.parse import urlsplit

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

from ..config import Config
from ..security import DataProtector, request_signature
from .notifications import Outcome, attempt


class WebhookSender:
    def __init__(self, config: Config):
        self.url = config.webhook_url
        self.secret = config.internal_secret
        self.timeout = config.wechat_timeout
        self.protector = DataProtector(config.data_key_bytes)

    def opened(self, body: dict[str, Any]) -> dict[str, Any]:
        """The body as the marketing system receives it: personal data the outbox keeps only
        encrypted (``encrypted``; ``sealed`` in messages queued before the key was renamed) is opened
        into ``personal`` at the last moment, for the signed request to the utility's own system."""
        opened = {k: v for k, v in body.items() if k not in ("encrypted", "sealed")}
        ciphertext = body.get("encrypted") or body.get("sealed")
        if isinstance(ciphertext, str):
            opened["personal"] = json.loads(self.protector.decrypt(ciphertext, "webhook"))
        return opened

    def signed_request(self, event: str, body: dict[str, Any], event_id: str) -> HTTPRequest:
        body = self.opened(body)
        raw = json.dumps({"event": event, "body": body}, ensure_ascii=False, default=str).encode()
        ts, nonce = str(int(time.time())), secrets.token_hex(16)
        path = urlsplit(self.url).path or "/"
        return HTTPRequest(
            self.url,
            method="POST",
            body=raw,
            headers={
                "Content-Type": "application/json; charset=UTF-8",
                "X-Timestamp": ts,
                "X-Nonce": nonce,
                "X-Event-Id": event_id,
                "X-Signature": request_signature(self.secret, "POST", path, ts, nonce, raw),
            },
            connect_timeout=self.timeout,
            request_timeout=self.timeout,
        )

    async def deliver(self, doc: dict[str, Any]) -> Outcome:
        if not self.url:
            return Outcome("skipped", [attempt("webhook", "not_configured")])
        payload = doc["payload"]
        request = self.signed_request(payload.get("event", ""), payload.get("body") or {}, doc["dedupe_key"])
        try:
            resp = await AsyncHTTPClient().fetch(request)
        except HTTPClientError as exc:
            if exc.code == 599 or exc.code >= 500 or exc.code == 429:
                return Outcome("retry", [attempt("webhook", "retry", status=exc.code)])
            return Outcome("failed", [attempt("webhook", "refused", status=exc.code)])
        except OSError as exc:
            return Outcome("retry", [attempt("webhook", "retry", detail=type(exc).__name__)])
        return Outcome("sent", [attempt("webhook", "sent", status=resp.code)], {"channel": "webhook"})
