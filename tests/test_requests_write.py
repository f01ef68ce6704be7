"""What tar does to each file it extracts, counted in-process (the core over ``MemStore``):
create, write, fchmod/fchown/futimens on the open file, close. The metadata set before the
upload rides on it (one PUT, no copy); a failed upload is still EIO at close, and the upload
that follows carries the metadata; a change after the upload is a copy in place."""

from __future__ import annotations

import errno
import os
import stat
from collections import Counter

import pytest

from s3fmfs.fs.core import FsCore
from s3fmfs.fs.errno_map import FsError
from s3fmfs.fs.inodes import ROOT_INODE
from tests.support.memstore import MemStore

MTIME = 1_700_000_000


async def extract(core: FsCore, name: bytes, data: bytes) -> tuple[int, int]:
    """tar's sequence up to close (not included): (handle, inode)."""
    fh, ino, _ = await core.create(ROOT_INODE, name, 0o600, os.O_WRONLY | os.O_EXCL, 0, 0)
    await core.write(fh, 0, data)
    await core.setattr(ino, uid=1234, gid=1234, fh=fh)  # fchown (as root)
    await core.setattr(ino, mode=0o640, fh=fh)  # fchmod
    await core.setattr(ino, mtime_ns=MTIME * 10**9, fh=fh)  # futimens
    return fh, ino


def assert_meta(store: MemStore, key: str) -> None:
    meta = store.objects[key].metadata
    assert (int(meta["mode"]), meta["uid"], meta["gid"], meta["mtime"]) == (
        stat.S_IFREG | 0o640,
        "1234",
        "1234",
        str(MTIME),
    )


async def test_metadata_set_before_close_rides_on_the_put(
    mem_core: FsCore, memstore: MemStore
) -> None:
    fh, _, _ = await mem_core.create(ROOT_INODE, b"probe", 0o600, os.O_WRONLY, 0, 0)
    await mem_core.release(fh)
    before = memstore.calls.copy()  # (a create's probes of a new name, the empty file's PUT)
    fh, ino = await extract(mem_core, b"f.c", b"int main;\n")
    await mem_core.flush(fh)
    await mem_core.release(fh)
    assert memstore.body("f.c") == b"int main;\n"
    assert_meta(memstore, "f.c")
    spent = memstore.calls - before
    assert spent["put"] == 1 and spent["copy"] == 0, spent
    # nothing but the create's probes of the new name (as for the first file)
    assert spent - Counter(put=1) == before - Counter(put=1), spent
    attr = await mem_core.getattr(ino)
    assert (attr.mode, attr.uid, attr.mtime_ns) == (stat.S_IFREG | 0o640, 1234, MTIME * 10**9)


async def test_a_failed_upload_is_eio_and_the_next_one_carries_the_metadata(
    mem_core: FsCore, memstore: MemStore
) -> None:
    fh, _ = await extract(mem_core, b"f.c", b"data")
    memstore.fail("put")
    with pytest.raises(FsError) as caught:
        await mem_core.flush(fh)
    assert caught.value.errno == errno.EIO
    assert "f.c" not in memstore.objects
    await mem_core.release(fh)  # still unsaved: saved now
    assert memstore.body("f.c") == b"data"
    assert_meta(memstore, "f.c")
    assert memstore.count("copy") == 0


async def test_a_change_after_the_upload_is_a_copy(mem_core: FsCore, memstore: MemStore) -> None:
    fh, ino = await extract(mem_core, b"f.c", b"data")
    await mem_core.flush(fh)
    await mem_core.release(fh)
    puts = memstore.count("put")
    await mem_core.setattr(ino, mode=0o600)  # chmod after close
    assert (memstore.count("copy"), memstore.count("put")) == (1, puts)
    assert int(memstore.objects["f.c"].metadata["mode"]) == stat.S_IFREG | 0o600
    assert memstore.body("f.c") == b"data"
