"""Store wrappers for tests that count what the filesystem asks of the bucket.

Invariants: a wrapper forwards every call to the real store unchanged (over moto), counting it
by name; delays and failures happen only when a test asks for them.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Iterable, Mapping

import trio

from s3fmfs.client import errors
from s3fmfs.fs.s3store import S3Store
from s3fmfs.fs.store import ListingPage, ObjectInfo, PutBody, PutResult


class CountingStore:
    """An ObjectStore wrapper that counts calls, and can fail or slow down some of them."""

    def __init__(self, inner: S3Store) -> None:
        self.inner = inner
        self.calls: dict[str, int] = {}
        self.fail_put = False
        self.head_delay = 0.0
        self.heads_in_flight = 0
        self.max_heads_in_flight = 0

    def count(self, name: str) -> int:
        return self.calls.get(name, 0)

    def asked(self) -> int:
        """Requests for objects' attributes: HEADs, and the GETs of small objects in their
        place (``s3fmfs.fs.bodies``)."""
        return self.count("head") + self.count("get_object")

    def total(self) -> int:
        return sum(self.calls.values())

    def _hit(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1

    async def list_page(
        self, prefix: str, delimiter: str | None = None, max_keys: int = 1000
    ) -> ListingPage:
        self._hit("list")
        return await self.inner.list_page(prefix, delimiter, max_keys)

    async def iter_pages(
        self, prefix: str, delimiter: str | None = None
    ) -> AsyncGenerator[ListingPage, None]:
        async for page in self.inner.iter_pages(prefix, delimiter):
            self._hit("list")
            yield page

    async def head(self, key: str) -> ObjectInfo | None:
        self._hit("head")
        self.heads_in_flight += 1
        self.max_heads_in_flight = max(self.max_heads_in_flight, self.heads_in_flight)
        try:
            if self.head_delay:
                await trio.sleep(self.head_delay)
            return await self.inner.head(key)
        finally:
            self.heads_in_flight -= 1

    async def get_object(self, key: str, *, if_match: str = "") -> tuple[ObjectInfo, bytes] | None:
        self._hit("get_object")  # a HEAD's stand-in for a small object: same delay and tally
        self.heads_in_flight += 1
        self.max_heads_in_flight = max(self.max_heads_in_flight, self.heads_in_flight)
        try:
            if self.head_delay:
                await trio.sleep(self.head_delay)
            return await self.inner.get_object(key, if_match=if_match)
        finally:
            self.heads_in_flight -= 1

    async def get_range(
        self, key: str, start: int, end: int | None, *, if_match: str = ""
    ) -> bytes:
        self._hit("get")
        return await self.inner.get_range(key, start, end, if_match=if_match)

    async def put(
        self,
        key: str,
        body: PutBody,
        metadata: Mapping[str, str],
        content_type: str | None = None,
    ) -> PutResult:
        self._hit("put")
        if self.fail_put:
            raise errors.InternalError(500, "InternalError", "injected", method="PUT")
        return await self.inner.put(key, body, metadata, content_type)

    async def copy(
        self,
        src: str,
        dst: str,
        metadata: Mapping[str, str] | None = None,
        content_type: str | None = None,
    ) -> PutResult:
        self._hit("copy")
        return await self.inner.copy(src, dst, metadata, content_type)

    def presign_get(self, key: str, expires: int) -> str:
        self._hit("presign_get")
        return self.inner.presign_get(key, expires)

    async def delete(self, key: str) -> None:
        self._hit("delete")
        await self.inner.delete(key)

    async def delete_many(self, keys: Iterable[str]) -> list[str]:
        self._hit("delete_many")
        return await self.inner.delete_many(keys)
