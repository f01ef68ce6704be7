"""A small object comes in one GET (``readahead.WHOLE_OBJECT``), whatever the reads' sizes and
order near its start; bigger ones, later first reads and a budget too small keep the first
window. The read-ahead alone over a scripted stream (no server)."""

from __future__ import annotations

import trio
import trio.testing

from s3fmfs.fs.readahead import MIN_WINDOW, SLACK, WHOLE_OBJECT, ReadAhead, ReadBudget, Sink

MiB = 1 << 20
READ = 128 << 10  # the kernel's read size


class Object:
    """An object's bytes streamed in 64 KiB chunks; the GETs asked for (start, length)."""

    def __init__(self, size: int) -> None:
        self.content = (bytes(range(251)) * (size // 251 + 1))[:size]
        self.fetched: list[tuple[int, int]] = []

    async def stream(self, start: int, length: int, sink: Sink) -> None:
        self.fetched.append((start, length))
        await trio.sleep(0.01)
        end = min(start + length, len(self.content))
        for pos in range(start, end, 64 << 10):
            await sink(self.content[pos : min(end, pos + (64 << 10))])


async def read_all(ra: ReadAhead, obj: Object, offsets: list[int]) -> bytes:
    """Reads of ``READ`` bytes at ``offsets``, in that order, then to the end; the content."""
    size = len(obj.content)
    out = {o: await ra.read(o, READ, size, 0, obj.stream) for o in offsets}
    pos = max(offsets) + READ
    while pos < size + READ:
        out[pos] = await ra.read(pos, READ, size, 0, obj.stream)
        pos += READ
    assert await ra.read(size, READ, size, 0, obj.stream) == b""  # past the end
    return b"".join(out[k] for k in sorted(out))


async def test_a_small_object_is_one_get_whatever_the_first_read(
    autojump_clock: trio.testing.MockClock,
) -> None:
    for size, first in [
        (MiB + 1, [0]),
        (3 * MiB, [0]),
        (WHOLE_OBJECT, [0]),
        (3 * MiB, [READ, 0]),  # the kernel's second read came first
        (100_000, [0]),
    ]:
        obj = Object(size)
        async with trio.open_nursery() as nursery:
            ra = ReadAhead(ReadBudget(16 * MiB), nursery)
            assert await read_all(ra, obj, first) == obj.content
            nursery.cancel_scope.cancel()
        assert obj.fetched == [(0, size)], (size, first, obj.fetched)


async def test_bigger_objects_later_reads_and_small_budgets_keep_the_first_window(
    autojump_clock: trio.testing.MockClock,
) -> None:
    cases = [
        (WHOLE_OBJECT + 1, 16 * MiB, 0),  # bigger than a small object
        (3 * MiB, 16 * MiB, SLACK),  # a first read past the start: a reader that seeks
        (3 * MiB, 2 * MiB, 0),  # more than the read-ahead may hold
        (3 * MiB, 0, 0),  # readahead_mb=0
    ]
    for size, budget, offset in cases:
        obj = Object(size)
        async with trio.open_nursery() as nursery:
            ra = ReadAhead(ReadBudget(budget), nursery)
            data = await ra.read(offset, READ, size, 0, obj.stream)
            assert data == obj.content[offset : offset + READ]
            nursery.cancel_scope.cancel()
        assert obj.fetched == [(offset, MIN_WINDOW)], (size, budget, offset, obj.fetched)


async def test_without_a_nursery_a_small_object_is_one_get_too(
    autojump_clock: trio.testing.MockClock,
) -> None:
    obj = Object(2 * MiB)
    ra = ReadAhead(ReadBudget(16 * MiB), None)
    assert await read_all(ra, obj, [0]) == obj.content
    assert obj.fetched == [(0, 2 * MiB)]
