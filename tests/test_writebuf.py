"""Write buffers: small content stays in memory within the mount's pool, larger content moves to
a temporary file, and either way the buffer holds exactly the bytes written."""

from __future__ import annotations

import errno
import os
import random
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from s3fmfs.fs import writebuf
from s3fmfs.fs.writebuf import FileWindow, MemoryPool, WriteBuffer


def test_small_file_stays_in_memory_and_uploads_as_bytes() -> None:
    async def main() -> None:
        pool = MemoryPool()
        buf = await WriteBuffer.create(None, pool)
        await buf.pwrite(0, b"hello ")
        await buf.pwrite(6, b"world")
        assert buf.in_memory
        assert pool.used == 11
        assert await buf.pread(0, 100) == b"hello world"
        source = await buf.upload_source()
        assert source == b"hello world"
        assert buf.window(6, 5).read() == b"world"
        buf.close()
        assert pool.used == 0
        assert buf.closed

    trio.run(main)


def test_growing_past_the_limit_moves_to_a_file_with_every_byte() -> None:
    async def main() -> None:
        pool = MemoryPool()
        buf = await WriteBuffer.create(None, pool)
        head = b"a" * 1000
        await buf.pwrite(0, head)
        tail = bytes(range(256)) * (writebuf.MEMORY_LIMIT // 256)
        await buf.pwrite(len(head), tail)
        assert not buf.in_memory
        assert pool.used == 0  # the memory went back to the pool
        assert buf.size == len(head) + len(tail)
        assert await buf.pread(0, buf.size) == head + tail
        source = await buf.upload_source()
        assert not isinstance(source, bytes)
        assert source.read() == head + tail
        assert buf.window(990, 20).read() == head[990:] + tail[:10]
        buf.close()

    trio.run(main)


def test_a_spent_pool_sends_new_buffers_to_disk() -> None:
    async def main() -> None:
        pool = MemoryPool(limit=100)
        first = await WriteBuffer.create(None, pool)
        await first.pwrite(0, b"x" * 80)
        second = await WriteBuffer.create(None, pool)
        await second.pwrite(0, b"y" * 40)  # 80 + 40 > 100
        assert first.in_memory and not second.in_memory
        assert pool.used == 80
        assert await second.pread(0, 100) == b"y" * 40
        first.close()
        second.close()
        assert pool.used == 0

    trio.run(main)


def test_without_a_pool_the_buffer_is_a_file_from_the_start() -> None:
    async def main() -> None:
        buf = await WriteBuffer.create(None)
        assert not buf.in_memory
        await buf.pwrite(3, b"abc")
        assert await buf.pread(0, 10) == b"\0\0\0abc"
        buf.close()

    trio.run(main)


@pytest.mark.parametrize("seed", range(20))
def test_random_writes_and_truncates_match_a_model(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Holes, overwrites, truncations down and up, reads: the same bytes as a bytearray,
    whether the buffer crosses into its file or not (a small limit makes it cross)."""
    monkeypatch.setattr(writebuf, "MEMORY_LIMIT", 4096)
    rng = random.Random(seed)

    async def main() -> None:
        pool = MemoryPool(limit=rng.choice([2048, 8192, 1 << 20]))
        buf = await WriteBuffer.create(None, pool)
        model = bytearray()
        for _ in range(60):
            op = rng.random()
            if op < 0.6:
                offset = rng.randrange(0, 6000)
                data = rng.randbytes(rng.randrange(1, 900))
                await buf.pwrite(offset, data)
                if len(model) < offset:
                    model.extend(bytes(offset - len(model)))
                model[offset : offset + len(data)] = data
            elif op < 0.8:
                size = rng.randrange(0, 7000)
                await buf.truncate(size)
                if size <= len(model):
                    del model[size:]
                else:
                    model.extend(bytes(size - len(model)))
            else:
                offset = rng.randrange(0, 7000)
                length = rng.randrange(0, 3000)
                assert await buf.pread(offset, length) == bytes(model[offset : offset + length])
            assert buf.size == len(model)
            assert 0 <= pool.used <= pool.limit
        source = await buf.upload_source()
        content = source if isinstance(source, bytes) else source.read()
        assert content == bytes(model)
        buf.close()
        assert pool.used == 0

    trio.run(main)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs (root only), unmounted at the end."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], check=True)
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def test_a_write_that_finds_the_disk_full_changes_nothing(small_disk: Path) -> None:
    """A write over old bytes and past the end that runs out of room part way: ENOSPC, and
    the buffer (size, bytes, the file's length, what an upload reads) is as before it."""

    async def main() -> None:
        rng = random.Random(7)
        buf = await WriteBuffer.create(str(small_disk))
        old = rng.randbytes(600 << 10)
        await buf.pwrite(0, old)
        with pytest.raises(OSError) as info:
            await buf.pwrite(300 << 10, rng.randbytes(800 << 10))  # needs 1.1 MiB in all
        assert info.value.errno == errno.ENOSPC
        assert buf.size == len(old)
        assert await buf.pread(0, 2 << 20) == old
        source = await buf.upload_source()
        assert isinstance(source, FileWindow) and source.length == len(old)
        assert os.fstat(source.fd).st_size == len(old)
        assert source.read() == old
        await buf.pwrite(len(old), b"more")  # what fits still goes in
        assert await buf.pread(0, 2 << 20) == old + b"more"
        buf.close()

    trio.run(main)
