"""The database keeps MongoDB's single-document promises and serves equality from indexes
(docs/storage.md).

Every test here is standard MongoDB: it passes against MongoDB (``MONGODB_URI``) and against the
embedded FerretDB as this project builds it (scripts/install-ferretdb.sh and its patches). Only the
``explain`` checks read FerretDB's own plan format and are skipped on MongoDB.
"""

from __future__ import annotations

import statistics
import threading
import time
import uuid
from collections.abc import Callable

import pytest
from pymongo import ASCENDING, DESCENDING, MongoClient, ReturnDocument
from pymongo.errors import DuplicateKeyError

ROUNDS = 10


@pytest.fixture(scope="module")
def client(mongodb_uri):
    # a pool as large as the contenders, so they really run at once
    c = MongoClient(mongodb_uri, maxPoolSize=80, tz_aware=True)
    yield c
    c.close()


@pytest.fixture
def coll(client):
    db = client[f"storage_{uuid.uuid4().hex[:8]}"]
    yield db["probe"]
    client.drop_database(db.name)


def is_ferretdb(coll) -> bool:
    return "ferretdbVersion" in coll.database.client.admin.command("buildInfo")


def contend(n: int, action: Callable[[int], object]) -> list[object]:
    """Runs ``action(i)`` in ``n`` threads released at the same moment; their results in order."""
    barrier = threading.Barrier(n)
    results: list[object] = [None] * n
    errors: list[BaseException] = []

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = action(i)
        except BaseException as exc:  # reported below, in the test thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    return results


def test_one_of_sixty_conditional_updates_wins(coll):
    for round_no in range(ROUNDS):
        coll.insert_one({"_id": round_no, "state": "open", "winner": None})
        results = contend(
            60,
            lambda i, r=round_no: (
                coll.update_one({"_id": r, "state": "open"}, {"$set": {"state": "taken", "winner": i}}).modified_count
            ),
        )
        assert sum(results) == 1, f"round {round_no}: {sum(results)} winners"
        doc = coll.find_one({"_id": round_no})
        assert doc["state"] == "taken" and results[doc["winner"]] == 1


def test_one_of_sixty_find_one_and_updates_gets_the_document(coll):
    for round_no in range(ROUNDS):
        coll.insert_one({"_id": round_no, "state": "open"})
        results = contend(
            60,
            lambda i, r=round_no: coll.find_one_and_update(
                {"_id": r, "state": "open"}, {"$set": {"state": "taken", "by": i}}, return_document=ReturnDocument.AFTER
            ),
        )
        won = [doc for doc in results if doc is not None]
        assert len(won) == 1, f"round {round_no}: {len(won)} documents returned"
        assert coll.find_one({"_id": round_no})["by"] == won[0]["by"]


def test_a_conditional_update_on_an_indexed_field_has_one_winner(coll):
    # the filter is served by an index instead of _id: the same promise
    coll.create_index([("ticket", ASCENDING)])
    for round_no in range(ROUNDS):
        coll.insert_one({"ticket": f"t{round_no}", "state": "open"})
        results = contend(
            60,
            lambda i, r=round_no: (
                coll.update_one({"ticket": f"t{r}", "state": "open"}, {"$set": {"state": "taken"}}).modified_count
            ),
        )
        assert sum(results) == 1, f"round {round_no}: {sum(results)} winners"


def test_three_thousand_increments_add_up(coll):
    for round_no in range(ROUNDS):
        coll.insert_one({"_id": round_no, "n": 0})

        def bump(_i, r=round_no):
            for _ in range(100):
                coll.update_one({"_id": r}, {"$inc": {"n": 1}})

        contend(30, bump)
        assert coll.find_one({"_id": round_no})["n"] == 3000, f"round {round_no}"


def test_twenty_upserts_make_one_document(coll):
    for round_no in range(ROUNDS):
        key = f"k{round_no}"
        contend(20, lambda _i, k=key: coll.update_one({"_id": k}, {"$inc": {"hits": 1}}, upsert=True))
        docs = list(coll.find({"_id": key}))
        assert len(docs) == 1 and docs[0]["hits"] == 20, f"round {round_no}: {docs}"


def test_upserts_by_a_unique_field_make_one_document(coll):
    coll.create_index([("key", ASCENDING)], unique=True)
    for round_no in range(ROUNDS):
        key = f"k{round_no}"
        results = contend(
            20, lambda _i, k=key: coll.update_one({"key": k}, {"$inc": {"hits": 1}}, upsert=True).upserted_id
        )
        assert sum(1 for r in results if r is not None) == 1, f"round {round_no}"
        docs = list(coll.find({"key": key}))
        assert len(docs) == 1 and docs[0]["hits"] == 20, f"round {round_no}: {docs}"


def test_a_conditional_delete_has_one_winner(coll):
    for round_no in range(ROUNDS):
        coll.insert_one({"_id": round_no, "state": "done"})
        results = contend(30, lambda _i, r=round_no: coll.delete_one({"_id": r, "state": "done"}).deleted_count)
        assert sum(results) == 1, f"round {round_no}"
        results = contend(30, lambda _i, r=round_no: coll.find_one_and_delete({"_id": r}))
        assert results == [None] * 30


def test_an_insert_racing_an_upsert_keeps_one_document(coll):
    for round_no in range(ROUNDS):

        def act(i, r=round_no):
            if i % 2:
                try:
                    coll.insert_one({"_id": r, "n": 1})
                except DuplicateKeyError:
                    coll.update_one({"_id": r}, {"$inc": {"n": 1}})
            else:
                coll.update_one({"_id": r}, {"$inc": {"n": 1}}, upsert=True)

        contend(20, act)
        assert coll.find_one({"_id": round_no})["n"] == 20


# -- equality served by an index must find exactly what MongoDB finds --------------------------


def test_indexed_equality_finds_what_mongodb_finds(coll):
    coll.create_index([("f", ASCENDING)])
    coll.create_index([("g", DESCENDING), ("h", ASCENDING)])
    odd = ['a"b', "a\\b", "<&>", "户号 5299", "\u2028", "x\ny", ""]
    docs = [{"_id": i, "f": s, "g": s} for i, s in enumerate(odd)]
    docs += [
        {"_id": "int", "f": 5, "g": 5},
        {"_id": "long", "f": 5 * 10**12, "g": 1},
        {"_id": "double", "f": 5.0, "g": 2.5},
        {"_id": "missing"},
        {"_id": "null", "f": None},
        {"_id": "doc", "f": {"x": "v"}},
        {"_id": "plain", "f": "v", "g": "v"},
    ]
    coll.insert_many(docs)
    for i, s in enumerate(odd):
        assert [d["_id"] for d in coll.find({"f": s})] == [i], repr(s)
        assert [d["_id"] for d in coll.find({"g": {"$eq": s}})] == [i], repr(s)
    assert {d["_id"] for d in coll.find({"f": 5})} == {"int", "double"}
    assert {d["_id"] for d in coll.find({"f": 5.0})} == {"int", "double"}
    assert {d["_id"] for d in coll.find({"f": None})} == {"missing", "null"}
    assert {d["_id"] for d in coll.find({"f": {"x": "v"}})} == {"doc"}
    assert {d["_id"] for d in coll.find({"f": {"$in": ["v", "<&>", 5]}})} == {"plain", 2, "int", "double"}
    assert {d["_id"] for d in coll.find({"f": "v", "g": "v"})} == {"plain"}
    assert {d["_id"] for d in coll.find({"f": "v", "$or": [{"g": "w"}, {"g": "v"}]})} == {"plain"}
    assert coll.count_documents({"f": "v"}) == 1

    # a value inside an array matches as MongoDB matches it, before and after the array arrives
    if is_ferretdb(coll):
        assert any("USING INDEX" in step for step in plan_of(coll, {"f": "v"}))
    coll.insert_one({"_id": "array", "f": ["v", "w"], "g": ["v"]})
    if is_ferretdb(coll):  # the index holds ["v", "w"] as one value: it can no longer answer f == "v"
        assert not any("USING INDEX" in step for step in plan_of(coll, {"f": "v"}))
    assert {d["_id"] for d in coll.find({"f": "v"})} == {"plain", "array"}
    assert {d["_id"] for d in coll.find({"g": "v"})} == {"plain", "array"}
    assert {d["_id"] for d in coll.find({"f": {"$in": ["w"]}})} == {"array"}
    coll.update_one({"_id": "plain"}, {"$set": {"h": ["q"]}})
    assert {d["_id"] for d in coll.find({"f": "w"})} == {"array"}
    assert coll.update_many({"f": "v"}, {"$set": {"seen": True}}).modified_count == 2
    assert coll.delete_many({"f": "v"}).deleted_count == 2


def test_an_array_set_by_update_is_still_found(coll):
    coll.create_index([("tag", ASCENDING)])
    coll.insert_many([{"_id": 1, "tag": "a"}, {"_id": 2, "tag": "b"}])
    coll.update_one({"_id": 2}, {"$set": {"tag": ["a", "c"]}})
    assert {d["_id"] for d in coll.find({"tag": "a"})} == {1, 2}
    coll.update_one({"_id": 3}, {"$push": {"tag": "a"}}, upsert=True)
    assert {d["_id"] for d in coll.find({"tag": "a"})} == {1, 2, 3}


def test_an_index_on_a_field_that_already_holds_arrays_finds_them(coll):
    coll.insert_many([{"_id": 1, "tag": ["a"]}, {"_id": 2, "tag": "a"}])
    coll.create_index([("tag", ASCENDING)])
    assert {d["_id"] for d in coll.find({"tag": "a"})} == {1, 2}


def plan_of(coll, filter_: dict) -> list[str]:
    return coll.database.command("explain", {"find": coll.name, "filter": filter_})["queryPlanner"]["Plan"]


def test_an_id_lookup_is_an_index_search(coll):
    if not is_ferretdb(coll):
        pytest.skip("MongoDB: the _id index is its own")
    coll.insert_many([{"_id": f"k{i}", "n": i} for i in range(50)])
    plan = plan_of(coll, {"_id": "k7"})
    assert any("USING INDEX" in step for step in plan), plan  # SCAN without the build's patch
    assert coll.find_one({"_id": "k7"})["n"] == 7


def test_equality_on_an_indexed_field_is_an_index_search_among_fifty_thousand(coll):
    if not is_ferretdb(coll):
        pytest.skip("MongoDB: its planner is its own")
    coll.insert_many(
        [{"account_no": f"{i % 1000:010d}", "period": f"2026-{i % 12 + 1:02d}", "n": i} for i in range(50_000)]
    )
    coll.create_index([("account_no", ASCENDING), ("period", DESCENDING)])
    coll.create_index([("status", ASCENDING)])

    for filter_ in (
        {"account_no": "0000000042"},
        {"account_no": {"$in": ["0000000042", "0000000043"]}},
        {"account_no": "0000000042", "period": {"$gte": "2026-06"}},
    ):
        plan = plan_of(coll, filter_)
        assert any("USING INDEX" in step for step in plan), (filter_, plan)
    assert not any("USING INDEX" in step for step in plan_of(coll, {"n": 5})), "n has no index"

    timings = []
    for i in range(200):
        started = time.perf_counter()
        found = list(coll.find({"account_no": f"{i % 1000:010d}"}).sort("period", -1))
        timings.append(time.perf_counter() - started)
        assert len(found) == 50
    print(
        f"\nindexed equality among 50,000 documents, 50 found: median {statistics.median(timings) * 1000:.1f} ms"
        f" over 200 finds"
    )
