"""What the database promises, counted, and how fast an indexed equality is.

    python bench/bench_storage.py [--docs 50000] [--finds 200] [--rounds 10] [--uri mongodb://...]

Against the embedded FerretDB as this project builds it (or ``--uri`` / ``MONGODB_URI``, e.g. an
unpatched FerretDB started by hand, to compare), prints per round:
- winners among 60 concurrent ``update_one({_id, state: "open"}, {$set: {state: "taken"}})`` (MongoDB: 1),
- documents returned to 60 concurrent ``find_one_and_update`` of the same kind (MongoDB: 1),
- the value after 30 threads x 100 ``$inc`` (MongoDB: 3000),
- documents and hits after 20 concurrent upserts with ``$inc`` (MongoDB: 1 document, 20 hits; an
  unpatched server may raise duplicate-key errors, counted as ``errors``),
then the plan and the median / p95 latency of ``--finds`` finds by an indexed field among ``--docs``
documents (50 found each). Not a test: figures for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pymongo import ASCENDING, DESCENDING, MongoClient, ReturnDocument  # noqa: E402
from pymongo.errors import PyMongoError  # noqa: E402

from wx_backend.embedded import database_uri  # noqa: E402


def contend(n: int, action: Callable[[int], object]) -> tuple[list[object], int]:
    barrier = threading.Barrier(n)
    results: list[object] = [None] * n
    errors = [0]

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = action(i)
        except PyMongoError:
            errors[0] += 1

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, errors[0]


def promises(coll, rounds: int) -> None:
    for r in range(rounds):
        coll.insert_one({"_id": f"u{r}", "state": "open"})
        res, err = contend(
            60,
            lambda i, r=r: (
                coll.update_one({"_id": f"u{r}", "state": "open"}, {"$set": {"state": "taken"}}).modified_count
            ),
        )
        winners = sum(x or 0 for x in res)

        coll.insert_one({"_id": f"f{r}", "state": "open"})
        res, err2 = contend(
            60,
            lambda i, r=r: coll.find_one_and_update(
                {"_id": f"f{r}", "state": "open"}, {"$set": {"state": "taken"}}, return_document=ReturnDocument.AFTER
            ),
        )
        returned = sum(1 for x in res if x is not None)

        coll.insert_one({"_id": f"i{r}", "n": 0})
        _, err3 = contend(
            30, lambda i, r=r: [coll.update_one({"_id": f"i{r}"}, {"$inc": {"n": 1}}) for _ in range(100)]
        )
        total = coll.find_one({"_id": f"i{r}"})["n"]

        _, err4 = contend(20, lambda i, r=r: coll.update_one({"key": f"up{r}"}, {"$inc": {"hits": 1}}, upsert=True))
        ups = list(coll.find({"key": f"up{r}"}))
        print(
            f"round {r + 1:2d}: update_one winners {winners:2d}/60, find_one_and_update returned {returned:2d}/60, "
            f"$inc {total:4d}/3000, upserts {len(ups)} document(s) with {sum(d['hits'] for d in ups):2d}/20 hits, "
            f"errors {err + err2 + err3 + err4}",
            flush=True,
        )


def finds(coll, docs: int, count: int) -> None:
    started = time.perf_counter()
    batch = []
    for i in range(docs):
        batch.append({"account_no": f"{i % (docs // 50):010d}", "period": f"2026-{i % 12 + 1:02d}", "n": i})
        if len(batch) == 5000:
            coll.insert_many(batch)
            batch = []
    if batch:
        coll.insert_many(batch)
    coll.create_index([("account_no", ASCENDING), ("period", DESCENDING)])
    print(f"loaded {docs:,} documents in {time.perf_counter() - started:.1f} s")
    plan = coll.database.command("explain", {"find": coll.name, "filter": {"account_no": "0000000007"}})
    print("plan:", plan.get("queryPlanner"))
    timings = []
    for i in range(count):
        t = time.perf_counter()
        found = list(coll.find({"account_no": f"{i % (docs // 50):010d}"}).sort("period", -1))
        timings.append((time.perf_counter() - t) * 1000)
        assert len(found) == 50, len(found)
    timings.sort()
    print(
        f"{count} finds by account_no among {docs:,} documents, 50 found each: "
        f"median {statistics.median(timings):.1f} ms, p95 {timings[int(len(timings) * 0.95) - 1]:.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--docs", type=int, default=50_000)
    parser.add_argument("--finds", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--uri", default=os.environ.get("MONGODB_URI", ""))
    args = parser.parse_args()
    if args.uri:
        os.environ["MONGODB_URI"] = args.uri
    with tempfile.TemporaryDirectory() as tmp, database_uri(Path(tmp)) as uri:
        client = MongoClient(uri, maxPoolSize=80)
        db = client[f"bench_storage_{uuid.uuid4().hex[:6]}"]
        try:
            print("server:", client.admin.command("buildInfo").get("ferretdbVersion", "MongoDB"), uri)
            promises(db["promises"], args.rounds)
            finds(db["finds"], args.docs, args.finds)
        finally:
            client.drop_database(db.name)
            client.close()


if __name__ == "__main__":
    main()
