"""Service-hall terminals (营业厅自助终端): registration and request authentication.

A terminal signs each ``/api/v1/terminal/...`` request with its own secret, by the scheme of
docs/internal-api.md (``X-Timestamp``, ``X-Nonce``, ``X-Signature``) plus ``X-Terminal-Id``. The secret is
shown once at registration and stored only encrypted (``DataProtector``); nonces are claimed
in the scope ``terminal:<id>``, so terminals cannot replay each other's requests either.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Any

from pymongo import IndexModel
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from ..db import utcnow
from ..errors import Forbidden, NotFound, ValidationFailed
from ..security import DataProtector
from ..validators import matches
from .request_signatures import RequestVerifier, SignatureRejected

INDEXES = {"terminals": [IndexModel([("terminal_id", 1)], unique=True)]}

SECRET_FIELD = "terminal_secret"  # noqa: S105 (the field name bound to the ciphertext)


class TerminalService:
    def __init__(self, db: AsyncDatabase, protector: DataProtector, verifier: RequestVerifier):
        self.db = db
        self.protector = protector
        self.verifier = verifier

    async def register(self, name: str, terminal_id: str | None = None) -> tuple[str, str]:
        """A new terminal: ``(terminal_id, secret)``. The secret is not retrievable later."""
        if not isinstance(name, str) or not name.strip():
            raise ValidationFailed(details=[{"field": "name", "message": "请填写终端名称（如营业厅与位置）"}])
        terminal_id = terminal_id or "T" + secrets.token_hex(4).upper()
        if not matches("terminal_id", terminal_id):
            raise ValidationFailed(details=[{"field": "terminal_id", "message": "2 至 32 位字母、数字、_ 或 -"}])
        secret = secrets.token_urlsafe(32)
        try:
            await self.db.terminals.insert_one(
                {
                    "terminal_id": terminal_id,
                    "name": name.strip(),
                    "status": "active",
                    "secret_enc": self.protector.encrypt(secret, SECRET_FIELD),
                    "created_at": utcnow(),
                }
            )
        except DuplicateKeyError:
            raise ValidationFailed(details=[{"field": "terminal_id", "message": "该终端编号已存在"}]) from None
        return terminal_id, secret

    async def list(self) -> list[dict[str, Any]]:
        docs = await self.db.terminals.find({}, {"secret_enc": 0}).sort("terminal_id", 1).to_list(None)
        return docs

    async def set_enabled(self, terminal_id: str, enabled: bool) -> None:
        result = await self.db.terminals.update_one(
            {"terminal_id": terminal_id},
            {"$set": {"status": "active" if enabled else "disabled", "updated_at": utcnow()}},
        )
        if not result.matched_count:
            raise NotFound("没有这个终端", code="terminal_not_found")

    async def authenticate(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> dict[str, Any]:
        """The terminal that signed this request, or 401 (unknown, bad signature, replay) / 403 (disabled)."""
        terminal_id = headers.get("X-Terminal-Id") or ""
        terminal = None
        if matches("terminal_id", terminal_id):
            terminal = await self.db.terminals.find_one({"terminal_id": terminal_id})
        if terminal is None:
            raise SignatureRejected("未登记的终端（X-Terminal-Id）", code="terminal_unknown")
        secret = self.protector.decrypt(terminal["secret_enc"], SECRET_FIELD)
        await self.verifier.verify(secret, method, path, headers, body, scope=f"terminal:{terminal_id}")
        if terminal.get("status") != "active":
            raise Forbidden("该终端已停用", code="terminal_disabled")
        return terminal
