"""``MemAccount``: an account of ``MemStore`` buckets in memory, behind ``fs.buckets.Account``,
with S3's answers: creating a bucket that exists is ``BucketAlreadyOwnedByYou``; a name S3
refuses (not 3-63 lower-case letters, digits, dots and hyphens, or the reserved ``xn--``) is
``InvalidBucketName``; deleting a bucket with objects is ``BucketNotEmpty``, a missing one
``NoSuchBucket``. ``opener`` gives the ``BucketOpener`` of a ``BucketsCore`` over it (one
``FsCore`` per bucket, as ``make_core`` builds them); ``calls`` counts the requests."""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

import trio

from s3fmfs.client import errors as s3
from s3fmfs.fs.buckets import BucketEntry, BucketOpener
from s3fmfs.fs.core import FsCore
from tests.support.core import FakeTime, make_core
from tests.support.memstore import MemStore

_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


class MemAccount:
    """Buckets by name, each a ``MemStore``."""

    def __init__(self, time: FakeTime) -> None:
        self.time = time
        self.buckets: dict[str, MemStore] = {}
        self.created: dict[str, int] = {}
        self.calls: Counter[str] = Counter()

    def add(self, name: str) -> MemStore:
        """A bucket made behind the mount's back."""
        store = MemStore(clock=self.time.clock)
        self.buckets[name] = store
        self.created[name] = self.time.clock()
        return store

    async def list_buckets(self) -> list[BucketEntry]:
        self.calls["list_buckets"] += 1
        return [BucketEntry(name, self.created[name]) for name in sorted(self.buckets)]

    async def create_bucket(self, name: str) -> None:
        self.calls["create_bucket"] += 1
        if not _NAME.match(name) or name.startswith("xn--"):  # a prefix AWS reserves
            raise s3.InvalidBucketName(400, "InvalidBucketName", name)
        if name in self.buckets:
            raise s3.BucketAlreadyOwnedByYou(409, "BucketAlreadyOwnedByYou", name)
        self.add(name)

    async def delete_bucket(self, name: str) -> None:
        self.calls["delete_bucket"] += 1
        store = self.buckets.get(name)
        if store is None:
            raise s3.NoSuchBucket(404, "NoSuchBucket", name)
        if store.objects:
            raise s3.BucketNotEmpty(409, "BucketNotEmpty", name)
        del self.buckets[name]

    def opener(self, **settings: Any) -> BucketOpener:
        """Opens a bucket as the service does: its own core over its store."""

        async def open_bucket(name: str) -> FsCore:
            self.calls["open"] += 1
            await trio.lowlevel.checkpoint()  # as the service's opening, it yields
            return make_core(self.buckets[name], time=self.time, **settings)

        return open_bucket
