"""The outbox: messages to send (notifications, webhooks), each queued once and sent once.

A business step queues its message right after its own atomic update, with a dedupe key
derived from the event (``stage:<app_no>:<stage>``): the unique index makes a repeated step
queue nothing. Workers claim due messages (queued -> sending, with a lease and an owner) with one
find-and-modify each, so two workers never hold the same claim. Every state change after the
claim is conditioned on the owner and the claim number.

States: ``queued`` (waiting, maybe for ``next_try_at``), ``sending`` (claimed), and the final
``sent``, ``undeliverable`` (no channel reaches the user), ``failed`` (tries exhausted or a
permanent error), ``skipped`` (nothing to send to, e.g. no webhook configured).
"""

from __future__ import annotations

import logging
import random
from datetime import datetime, timedelta
from typing import Any

from bson import ObjectId
from pymongo import ASCENDING, DESCENDING, IndexModel, ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from ..db import utcnow

log = logging.getLogger(__name__)

CLAIM_WINDOW = 20  # due messages looked at per claim
MAX_ACCOUNT_PAUSE = 1800.0  # seconds: the longest a channel waits between probes of a faulty account
FINAL = ("sent", "undeliverable", "failed", "skipped")
KINDS = ("notify", "webhook", "email")

INDEXES = {
    "outbox": [
        IndexModel([("dedupe_key", ASCENDING)], unique=True),
        IndexModel([("status", ASCENDING), ("next_try_at", ASCENDING)]),
        IndexModel([("msgid", ASCENDING)]),
        IndexModel([("user_id", ASCENDING)]),
    ],
    "template_receipts": [IndexModel([("openid", ASCENDING), ("at", ASCENDING)])],
    "subscribe_receipts": [IndexModel([("openid", ASCENDING), ("template_id", ASCENDING), ("at", ASCENDING)])],
}


class Outbox:
    def __init__(self, db: AsyncDatabase):
        self.db = db
        self.coll = db["outbox"]

    async def enqueue(self, kind: str, dedupe_key: str, payload: dict[str, Any]) -> bool:
        """Queue a message; ``False`` if one with this ``dedupe_key`` was queued before.

        ``kind`` is ``notify`` (payload ``{user_id, message, data, page}``, see
        ``Notifications.notify_user``), ``webhook`` (payload ``{event, body}``) or ``email``
        (payload ``{invoice_id, to}``, see ``services/mail.py``).
        """
        if kind not in KINDS:
            raise ValueError(f"unknown outbox kind {kind!r}")
        if not isinstance(dedupe_key, str) or not dedupe_key or len(dedupe_key) > 200:
            raise ValueError("dedupe_key must be a non-empty string of at most 200 characters")
        now = utcnow()
        doc = {
            "kind": kind,
            "dedupe_key": dedupe_key,
            "payload": payload,
            "status": "queued",
            "next_try_at": now,
            "tries": 0,
            "claims": 0,
            "attempts": [],
            "created_at": now,
            "updated_at": now,
        }
        if kind == "notify" and payload.get("user_id") is not None:
            doc["user_id"] = payload["user_id"]
        try:
            await self.coll.insert_one(doc)
        except DuplicateKeyError:
            return False
        return True

    # -- the worker's side ----------------------------------------------------------
    async def claim(self, owner: str, lease: float, limit: int = 1) -> list[dict[str, Any]]:
        """Take up to ``limit`` due messages (or ones whose holder's lease ran out).

        The due messages are listed, then each is taken by one ``find_one_and_update`` on its
        ``_id`` that moves it to ``sending`` only while its status and claim number are still
        those listed: of concurrent workers exactly one gets each message. The lease only
        recovers a message from a worker that died; it decides nothing else: every later write
        names the owner and the claim number, so a worker outliving its lease changes nothing.
        """
        now = utcnow()
        due = [{"status": "queued", "next_try_at": {"$lte": now}}, {"status": "sending", "lease_until": {"$lt": now}}]
        candidates = []
        for query in due:  # each an equality on the leading field of (status, next_try_at)
            candidates += (
                await self.coll.find(query, {"_id": 1, "claims": 1, "status": 1})
                .sort("next_try_at", ASCENDING)
                .limit(max(limit * 3, CLAIM_WINDOW))
                .to_list(None)
            )
        random.shuffle(candidates)  # concurrent workers spread over the due messages
        claimed: list[dict[str, Any]] = []
        for candidate in candidates:
            if len(claimed) >= limit:
                break
            doc = await self.coll.find_one_and_update(
                {"_id": candidate["_id"], "status": candidate["status"], "claims": candidate.get("claims", 0)},
                {
                    "$set": {
                        "status": "sending",
                        "lease_owner": owner,
                        "claims": candidate.get("claims", 0) + 1,
                        "lease_until": now + timedelta(seconds=lease),
                        "updated_at": now,
                    }
                },
                return_document=ReturnDocument.AFTER,
            )
            if doc is not None:  # else another worker took it first
                claimed.append(doc)
        return claimed

    def _held(self, doc: dict[str, Any], owner: str) -> dict[str, Any]:
        return {"_id": doc["_id"], "status": "sending", "lease_owner": owner, "claims": doc["claims"]}

    async def finish(
        self, doc: dict[str, Any], owner: str, status: str, attempts: list[dict], fields: dict[str, Any] | None = None
    ) -> bool:
        """Record the final outcome; ``False`` if the claim was lost meanwhile."""
        assert status in FINAL
        result = await self.coll.update_one(
            self._held(doc, owner),
            {
                "$set": {
                    "status": status,
                    "lease_until": None,
                    "finished_at": utcnow(),
                    "updated_at": utcnow(),
                    **(fields or {}),
                },
                "$push": {"attempts": {"$each": attempts}},
                "$inc": {"tries": 1 if attempts else 0},
            },
        )
        return result.modified_count == 1

    async def retry_at(
        self,
        doc: dict[str, Any],
        owner: str,
        when: datetime,
        attempts: list[dict],
        fields: dict[str, Any] | None = None,
        count_try: bool = True,
    ) -> bool:
        """Put the message back in the queue until ``when``."""
        result = await self.coll.update_one(
            self._held(doc, owner),
            {
                "$set": {
                    "status": "queued",
                    "next_try_at": when,
                    "lease_until": None,
                    "updated_at": utcnow(),
                    **(fields or {}),
                },
                "$push": {"attempts": {"$each": attempts}},
                "$inc": {"tries": 1 if count_try else 0},
            },
        )
        return result.modified_count == 1

    # -- pauses (45009: a template's daily quota is spent; account faults: a whole channel) --
    async def paused_until(self, key: str) -> datetime | None:
        doc = await self.db.outbox_pauses.find_one({"_id": key})
        if doc and doc["until"] > utcnow():
            return doc["until"]
        return None

    async def pause(self, key: str, until: datetime) -> None:
        await self.db.outbox_pauses.update_one({"_id": key}, {"$set": {"until": until, "at": utcnow()}}, upsert=True)

    # -- account pauses (the operator must fix the WeChat account) -------------------------
    async def pause_channel(self, channel: str, errcode: int, base: float) -> tuple[datetime, int]:
        """Pause a whole channel after an account-level fault: ``(until, strikes)``, ``strikes``
        counting this sender's pause (1 = the fault is new) or 0 if another sender paused it.

        The first pause lasts ``base`` seconds; each failed probe after one ran out doubles it
        (at most ``MAX_ACCOUNT_PAUSE``). Concurrent senders meeting the same fault share one pause.
        """
        now = utcnow()
        doc = await self.db.outbox_pauses.find_one({"_id": channel})
        if doc and doc["until"] > now:
            return doc["until"], 0
        strikes = (doc or {}).get("strikes", 0) + 1
        until = now + timedelta(seconds=min(base * 2 ** (strikes - 1), MAX_ACCOUNT_PAUSE))
        fields = {
            "until": until,
            "at": now,
            "errcode": errcode,
            "strikes": strikes,
            "since": (doc or {}).get("since") or now,
        }
        try:
            if doc:
                changed = await self.db.outbox_pauses.update_one(
                    {"_id": channel, "until": doc["until"]}, {"$set": fields}
                )
                if changed.modified_count:
                    return until, strikes
            else:
                await self.db.outbox_pauses.insert_one({"_id": channel, **fields})
                return until, strikes
        except DuplicateKeyError:
            pass
        current = await self.db.outbox_pauses.find_one({"_id": channel})  # another sender paused it first
        return (current or fields)["until"], 0

    async def clear_pause(self, channel: str) -> dict[str, Any] | None:
        """After a send on ``channel`` went through: its account pause, if it had one, ends."""
        return await self.db.outbox_pauses.find_one_and_delete({"_id": channel})

    async def resume(self, channels: tuple[str, ...]) -> int:
        """The operator fixed the account: lift the pauses and send the waiting messages now."""
        await self.db.outbox_pauses.delete_many({"_id": {"$in": list(channels)}})
        now = utcnow()
        result = await self.coll.update_many(
            {"status": "queued", "paused_on": {"$in": list(channels)}},
            {"$set": {"next_try_at": now, "updated_at": now}},
        )
        return result.modified_count

    async def pauses(self) -> list[dict[str, Any]]:
        return await self.db.outbox_pauses.find({"until": {"$gt": utcnow()}}).to_list(None)

    # -- delivery receipts (TEMPLATESENDJOBFINISH) ----------------------------------------
    async def record_receipt(self, msgid: int, status: str, openid: str | None = None) -> None:
        """Store WeChat's delivery status for ``msgid``, and on its message once that is recorded sent.

        The message is written only once it is ``sent``: the worker never writes it again after
        that, and the update names ``status: sent``, so the receipt never races the worker's own writes.
        """
        receipt = {"status": status, "at": utcnow()}
        await self.db.template_receipts.update_one({"_id": msgid}, {"$set": {**receipt, "openid": openid}}, upsert=True)
        sent = await self.db.template_msgids.find_one({"_id": msgid})
        if sent:
            await self.coll.update_one({"_id": sent["outbox_id"], "status": "sent"}, {"$set": {"delivery": receipt}})

    async def sent_template(self, msgid: int, outbox_id: Any) -> None:
        """After a template message is recorded sent: link its ``msgid``, and take a receipt that came first."""
        await self.db.template_msgids.update_one({"_id": msgid}, {"$set": {"outbox_id": outbox_id}}, upsert=True)
        doc = await self.db.template_receipts.find_one({"_id": msgid})
        if doc:
            await self.coll.update_one(
                {"_id": outbox_id, "status": "sent"}, {"$set": {"delivery": {"status": doc["status"], "at": doc["at"]}}}
            )

    async def unclaimed_receipt(self, openid: str, since: datetime, outbox_id: Any) -> dict[str, Any] | None:
        """A receipt for ``openid`` since ``since`` that no message owns yet, now ``outbox_id``'s.

        After a send whose answer was lost, WeChat's TEMPLATESENDJOBFINISH is the proof it went
        out: it names the user and the msgid, not our message, so the oldest receipt no message
        has claimed is taken, under the unique msgid, by one message only.
        """
        async for receipt in (
            self.db.template_receipts.find({"openid": openid, "at": {"$gte": since}}).sort("at", ASCENDING).limit(20)
        ):
            if await self.coll.find_one({"msgid": receipt["_id"]}, {"_id": 1}):
                continue  # a message that knew its msgid
            try:
                await self.db.template_msgids.insert_one({"_id": receipt["_id"], "outbox_id": outbox_id})
            except DuplicateKeyError:
                continue
            return receipt
        return None

    async def record_subscribe_receipt(
        self, msgid: int, openid: str, template_id: str, errcode: int, status: str
    ) -> None:
        """WeChat's subscribe_msg_sent_event for one message (``errcode`` 0: delivered)."""
        await self.db.subscribe_receipts.update_one(
            {"_id": msgid},
            {
                "$set": {"openid": openid, "template_id": template_id, "errcode": errcode, "status": status},
                "$setOnInsert": {"at": utcnow()},
            },
            upsert=True,
        )

    async def unclaimed_subscribe_receipt(
        self, openid: str, template_id: str, since: datetime, outbox_id: Any
    ) -> dict[str, Any] | None:
        """A delivered subscribe message to ``openid`` of ``template_id`` since ``since`` that no
        message owns yet, now ``outbox_id``'s (taken by one conditional update)."""
        for _ in range(20):
            receipt = await self.db.subscribe_receipts.find_one(
                {"openid": openid, "template_id": template_id, "errcode": 0, "at": {"$gte": since}, "outbox_id": None},
                sort=[("at", ASCENDING)],
            )
            if receipt is None:
                return None
            owner = await self.coll.find_one({"msgid": receipt["_id"], "channel": "subscribe"}, {"_id": 1})
            claimed = await self.db.subscribe_receipts.find_one_and_update(
                {"_id": receipt["_id"], "outbox_id": None},
                {"$set": {"outbox_id": owner["_id"] if owner else outbox_id}},
            )
            if claimed and not owner:
                return claimed
        return None

    # -- operations (scripts/messages.py) ----------------------------------------------
    async def find(
        self, statuses: tuple[str, ...] = ("undeliverable", "failed"), limit: int = 100
    ) -> list[dict[str, Any]]:
        cursor = self.coll.find({"status": {"$in": list(statuses)}}).sort("created_at", DESCENDING).limit(limit)
        return [doc async for doc in cursor]

    async def requeue(
        self, message_id: ObjectId | None = None, statuses: tuple[str, ...] = ("undeliverable", "failed")
    ) -> int:
        """Send again: one message by id, or every message in ``statuses``. Returns how many."""
        query: dict[str, Any] = {"status": {"$in": list(statuses)}}
        if message_id is not None:
            query["_id"] = message_id
        now = utcnow()
        result = await self.coll.update_many(
            query,
            {
                "$set": {
                    "status": "queued",
                    "next_try_at": now,
                    "tries": 0,
                    "channels_done": [],
                    "updated_at": now,
                    "requeued_at": now,
                },
            },
        )
        return result.modified_count
