"""The seal authority's revocation data: its CRL and its OCSP answers, from the seals collection.

Both are built on request from the seals' current status, so a revocation (印章注销) shows in
the next CRL download and the next OCSP answer: no job, no delay. The signed CRL is kept per
process and rebuilt when the set of revoked seals changes or half its lifetime has passed.
OCSP answers are signed by a delegated responder certificate each process issues itself under
the root (90 days, renewed at half-life; ``seals/revocation.py``). The utility's own seal
certificate is always ``good`` (it is replaced, not revoked, through ``scripts/seal_authority.py``);
a serial the authority never issued is ``unknown``.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

from pymongo import IndexModel
from pymongo.asynchronous.database import AsyncDatabase

from seals.revocation import (
    CRL_LIFETIME,
    GOOD,
    RESPONDER_LIFETIME,
    UNKNOWN,
    CertStatus,
    OcspResponder,
    build_crl,
    new_responder,
    ocsp_response,
)

from .sealauthority import AuthorityStore

INDEXES = {"seals": [IndexModel([("cert_serial", 1)])]}


def _utc(value):
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


class RevocationService:
    def __init__(self, db: AsyncDatabase, authority: AuthorityStore):
        self.db = db
        self.authority = authority
        self._crl: tuple[Any, float, bytes] | None = None  # (revoked-set key, built at, DER)
        self._responder: OcspResponder | None = None

    async def revoked(self) -> list[tuple[int, Any]]:
        """``(serial, revoked_at)`` of every revoked seal, oldest first."""
        cursor = self.db.seals.find({"status": "revoked"}, {"cert_serial": 1, "revoked_at": 1}).sort("revoked_at", 1)
        return [(int(doc["cert_serial"], 16), _utc(doc["revoked_at"])) async for doc in cursor]

    async def crl(self) -> bytes:
        """The current CRL (DER)."""
        revoked = await self.revoked()
        key = tuple(revoked)
        cached = self._crl
        if cached is not None and cached[0] == key and time.time() - cached[1] < CRL_LIFETIME.total_seconds() / 2:
            return cached[2]
        authority = await self.authority.get()
        built = time.time()
        der = await asyncio.to_thread(build_crl, authority.root, revoked, number=int(built * 1000))
        self._crl = (key, built, der)
        return der

    async def status_of(self, serial: int) -> CertStatus:
        authority = await self.authority.get()
        hex_serial = format(serial, "x")
        if hex_serial == authority.utility_serial:
            return GOOD
        doc = await self.db.seals.find_one({"cert_serial": hex_serial}, {"status": 1, "revoked_at": 1})
        if doc is None:
            return UNKNOWN
        if doc["status"] == "revoked":
            return CertStatus("revoked", _utc(doc["revoked_at"]))
        return GOOD

    async def ocsp(self, request_der: bytes) -> bytes:
        """The signed OCSP response (DER) to ``request_der``: one certificate per request."""
        from cryptography.x509 import ocsp as x509_ocsp

        try:
            serial = x509_ocsp.load_der_ocsp_request(request_der).serial_number
        except Exception:
            serial = None
        status = await self.status_of(serial) if serial is not None else UNKNOWN
        authority = await self.authority.get()
        return ocsp_response(
            authority.root, self._current_responder(authority.root), request_der, lambda _serial: status
        )

    def _current_responder(self, root) -> OcspResponder:
        now = datetime.now(UTC)
        responder = self._responder
        if responder is None or responder.not_after - now < RESPONDER_LIFETIME / 2:
            responder = self._responder = new_responder(root)
        return responder
