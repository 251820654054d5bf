"""The database answers the lookups the query paths rely on from an index (docs/storage.md)."""

from __future__ import annotations

import pytest


def test_an_id_lookup_is_an_index_search(stack):
    info = stack.db.command("buildInfo")
    if "ferretdbVersion" not in info:
        pytest.skip("MongoDB: the _id index is its own")
    coll = stack.db["storage_probe"]
    coll.insert_many([{"_id": f"k{i}", "n": i} for i in range(50)])
    try:
        plan = stack.db.command("explain", {"find": coll.name, "filter": {"_id": "k7"}})["queryPlanner"]["Plan"]
        assert any("USING INDEX" in step for step in plan), plan  # SCAN without the build's patch
        assert coll.find_one({"_id": "k7"})["n"] == 7
    finally:
        coll.drop()
