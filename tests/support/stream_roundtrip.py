"""Round-trip a large object through the client and report peak RSS (run as a subprocess).

Usage: python -m tests.support.stream_roundtrip ENDPOINT_HOST PORT SIZE_MIB
Prints one JSON line: sizes, digests and the process's peak RSS in MiB.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import AsyncIterator

import trio

from s3fmfs.client import CallingFormat, S3fmAuthConnection

CHUNK = 1 << 20
PHASES: dict[str, float] = {}


def peak_rss_mib() -> float:
    """This process's peak resident set (VmHWM). Not ``getrusage``'s ru_maxrss: Linux carries
    that across exec from the parent's memory, so under pytest it reports pytest's peak."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def mark(phase: str) -> None:
    """Record the peak RSS (MiB) reached by the end of a phase."""
    PHASES[phase] = peak_rss_mib()


def block(i: int) -> bytes:
    """A 1 MiB block that differs per index, cheap to make again for checking."""
    seed = hashlib.sha256(i.to_bytes(8, "big")).digest()
    return seed * (CHUNK // len(seed))


async def generate(n: int, digest: hashlib._Hash) -> AsyncIterator[bytes]:
    for i in range(n):
        data = block(i)
        digest.update(data)
        yield data


async def main(host: str, port: int, mib: int) -> dict[str, object]:
    size = mib * CHUNK
    async with S3fmAuthConnection(
        "AKID", "SECRET", False, host, port, CallingFormat.PATH, signature="v4"
    ) as conn:
        await conn.create_bucket("stream")
        sent = hashlib.sha256()
        await conn.put("stream", "big", generate(mib, sent), content_length=size)
        mark("put_stream")
        # 1. streamed GET, hashed on the fly
        got = hashlib.sha256()
        received = 0
        async with conn.get_stream("stream", "big") as resp:
            async for chunk in resp.aiter_bytes():
                got.update(chunk)
                received += len(chunk)
        mark("get_stream")
        # 2. GET spooled to a temp file, then PUT back from that file
        spooled = await conn.get("stream", "big", spool_size=8 << 20)
        mark("get_spooled")
        f = spooled.object.data
        await conn.put("stream", "big-copy", f)
        mark("put_file")
        f.close()
        head = await conn.head("stream", "big-copy")
        copy_digest = hashlib.sha256()
        async with conn.get_stream("stream", "big-copy") as resp:
            async for chunk in resp.aiter_bytes():
                copy_digest.update(chunk)
        await conn.delete_objects("stream", ["big", "big-copy"])
        await conn.delete_bucket("stream")
    return {
        "size": size,
        "received": received,
        "copy_size": head.content_length,
        "sent_sha256": sent.hexdigest(),
        "got_sha256": got.hexdigest(),
        "copy_sha256": copy_digest.hexdigest(),
        "peak_rss_mib": peak_rss_mib(),
        "spooled_to_file": not isinstance(spooled.object.data, bytes),
        "phases": PHASES,
    }


if __name__ == "__main__":
    result = trio.run(main, sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
    print(json.dumps(result))
