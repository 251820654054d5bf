"""The clean-up job removes what has expired and nothing else."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bson import ObjectId
from payments_support import run_script


def test_one_pass_removes_expired_records_only(stack):
    now = datetime.now(UTC)
    past, future = now - timedelta(minutes=1), now + timedelta(hours=1)
    marks = {}
    for name in ("sessions", "request_nonces", "sms_codes"):
        gone, kept = ObjectId(), ObjectId()
        extra = {"scope": "cleanup-test", "nonce": str(gone)} if name == "request_nonces" else {}
        stack.db[name].insert_one({"_id": gone, "expires_at": past, "cleanup_test": True, **extra})
        extra = {"scope": "cleanup-test", "nonce": str(kept)} if name == "request_nonces" else {}
        stack.db[name].insert_one({"_id": kept, "expires_at": future, "cleanup_test": True, **extra})
        marks[name] = (gone, kept)
    stack.db.rate_limits.insert_one(
        {"_id": "cleanup:old", "period": "2020-01-01", "count": 3, "last_at": now - timedelta(days=3)}
    )
    stack.db.rate_limits.insert_one({"_id": "cleanup:today", "period": "today", "count": 3, "last_at": now})
    stack.db.locks.insert_one({"_id": "account:0000000001:1", "key": "account:0000000001", "epoch": 1})
    stack.db.outbox_claims.insert_one({"_id": "x:1", "at": now})

    out = run_script(stack, "wx_backend.cleanup", "--once")
    assert out.returncode == 0, out.stderr
    counts = dict(part.split("=") for part in out.stdout.split())
    assert int(counts["sessions"]) >= 1 and int(counts["locks"]) == 1 and int(counts["outbox_claims"]) == 1

    for name, (gone, kept) in marks.items():
        assert stack.db[name].find_one({"_id": gone}) is None, name
        assert stack.db[name].find_one({"_id": kept}) is not None, name
    assert stack.db.rate_limits.find_one({"_id": "cleanup:old"}) is None
    assert stack.db.rate_limits.find_one({"_id": "cleanup:today"}) is not None
    assert stack.db.locks.count_documents({}) == 0 and stack.db.outbox_claims.count_documents({}) == 0
