"""Immutable GridFS files kept in this process: contract drafts and seal images.

Reading a GridFS file queries its chunks by ``files_id``; on FerretDB's SQLite backend only
``_id`` lookups use an index, so that query reads every chunk of the bucket and grows with the
database (seconds under load, with a few hundred contracts). A contract's draft and a seal's
image never change once stored, and 确认并盖章 needs both right after the preview read them,
so the last ones read or written stay here: least recently used first out, at most
``MAX_BYTES`` in all. A process that has not seen a file reads it from the database as before.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

MAX_BYTES = 48 * 1024 * 1024


class FileCache:
    def __init__(self, max_bytes: int = MAX_BYTES):
        self.max_bytes = max_bytes
        self._files: OrderedDict[Any, bytes] = OrderedDict()
        self._size = 0

    def get(self, file_id: Any) -> bytes | None:
        data = self._files.get(file_id)
        if data is not None:
            self._files.move_to_end(file_id)
        return data

    def put(self, file_id: Any, data: bytes) -> None:
        if len(data) > self.max_bytes:
            return
        self.drop(file_id)
        self._files[file_id] = data
        self._size += len(data)
        while self._size > self.max_bytes:
            _, old = self._files.popitem(last=False)
            self._size -= len(old)

    def drop(self, file_id: Any) -> None:
        old = self._files.pop(file_id, None)
        if old is not None:
            self._size -= len(old)


files = FileCache()
"""The process's cache (documents are immutable, so one per process serves every service)."""
