"""The in-process cache of immutable files: least recently used out first, bounded in bytes."""

from __future__ import annotations

from wx_backend.filecache import FileCache


def test_the_least_recently_used_file_goes_first_and_the_bound_holds():
    cache = FileCache(max_bytes=10)
    cache.put("a", b"1234")
    cache.put("b", b"5678")
    assert cache.get("a") == b"1234"  # now "b" is the least recently used
    cache.put("c", b"90ab")
    assert cache.get("b") is None and cache.get("a") == b"1234" and cache.get("c") == b"90ab"
    cache.put("huge", b"x" * 11)  # larger than the whole cache: not kept, nothing evicted
    assert cache.get("huge") is None and cache.get("a") == b"1234"
    cache.drop("a")
    assert cache.get("a") is None
    cache.put("d", b"123456")
    assert cache.get("c") == b"90ab" and cache.get("d") == b"123456"
