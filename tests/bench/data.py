"""The benchmark's data, generated deterministically (same sizes, same bytes every run).

- The big object: 1 MiB blocks, block ``i`` being ``sha256(i)`` repeated; any range of it can
  be computed again (:func:`big_bytes`) to check sampled reads.
- The listed folder: ``ls/f-NNNNN.txt`` objects of 100–1099 bytes (:func:`ls_objects`).
- The small-file set (:func:`small_tree`): a source-tree-like layout (packages, sub-packages,
  docs), sizes log-normal around 4 KiB (64 B to 256 KiB), text lines some of which contain
  :data:`NEEDLE`, so ``grep -r`` has matches; :func:`write_tarball` packs it once.
"""

from __future__ import annotations

import hashlib
import io
import math
import random
import tarfile
from dataclasses import dataclass
from pathlib import Path

MiB = 1 << 20
NEEDLE = b"s3fmfs_bench_needle"
SEED = 20240601
#: Fixed mtime of the tarball's entries (2024-01-01), so the tarball is byte-identical.
TAR_MTIME = 1704067200


def block(i: int) -> bytes:
    """Block ``i`` (1 MiB) of the big object."""
    seed = hashlib.sha256(i.to_bytes(8, "big")).digest()
    return seed * (MiB // len(seed))


def big_bytes(offset: int, length: int) -> bytes:
    """The big object's bytes ``[offset, offset + length)``."""
    out = bytearray()
    pos = offset
    end = offset + length
    while pos < end:
        i, within = divmod(pos, MiB)
        take = min(MiB - within, end - pos)
        out += block(i)[within : within + take]
        pos += take
    return bytes(out)


def write_big(path: Path, mib: int) -> None:
    """The big object as a local file (the write workload's source)."""
    with open(path, "wb") as f:
        for i in range(mib):
            f.write(block(i))


def sample_ranges(size: int, count: int = 8, length: int = 64 * 1024) -> list[tuple[int, int]]:
    """``count`` deterministic (offset, length) ranges spread over ``size`` bytes, including
    the first and the last bytes; ranges straddle block boundaries on purpose."""
    length = min(length, size)
    if size <= length:
        return [(0, size)]
    ranges = [(0, length), (size - length, length)]
    span = size - length
    for k in range(1, count - 1):
        offset = (span * k) // (count - 1) - 1000 * k
        ranges.append((max(0, min(span, offset)), length))
    return ranges


def ls_objects(count: int) -> dict[str, int]:
    """Names (relative to ``ls/``) and sizes of the listed folder's objects."""
    return {f"f-{i:05d}.txt": 100 + (i * 7919) % 1000 for i in range(count)}


def ls_body(name: str, size: int) -> bytes:
    line = f"{name}\n".encode()
    return (line * (size // len(line) + 1))[:size]


@dataclass(frozen=True)
class SmallFile:
    path: str  # relative, '/'-separated
    data: bytes

    @property
    def matches(self) -> int:
        """Lines containing :data:`NEEDLE` (what ``grep -c`` counts)."""
        return sum(1 for line in self.data.split(b"\n") if NEEDLE in line)


_WORDS = [
    *("self", "return", "import", "from", "def", "class", "if", "else", "for", "while", "in"),
    *("not", "and", "or", "None", "True", "False", "value", "result", "buffer", "offset"),
    *("length", "inode", "cache", "entry", "bucket", "key", "object", "request", "response"),
    *("error", "retry", "timeout", "upload", "download", "listing", "prefix", "marker"),
    *("token", "chunk", "block", "stream", "open", "close", "read", "write", "flush"),
    *("release", "rename", "unlink", "mkdir", "rmdir", "stat", "attr", "mode", "uid", "gid"),
]
_SUFFIXES = (".py", ".py", ".py", ".c", ".h", ".md", ".txt", ".rst", ".toml", ".json")


def _line(rng: random.Random) -> bytes:
    indent = "    " * rng.randrange(0, 4)
    words = " ".join(rng.choice(_WORDS) for _ in range(rng.randrange(2, 12)))
    return f"{indent}{words}\n".encode()


def small_tree(count: int) -> list[SmallFile]:
    """``count`` files of a source-tree-like set, in a stable order."""
    rng = random.Random(SEED)
    corpus = [_line(rng) for _ in range(4000)]
    packages = max(1, round(math.sqrt(count) / 3))
    dirs = [""]
    for p in range(packages):
        dirs.append(f"pkg{p:02d}")
        for s in range(rng.randrange(0, 4)):
            dirs.append(f"pkg{p:02d}/sub{s}")
            if rng.random() < 0.3:
                dirs.append(f"pkg{p:02d}/sub{s}/deep")
    dirs.append("docs")
    files: list[SmallFile] = []
    for i in range(count):
        folder = rng.choice(dirs)
        name = f"module_{i:04d}{rng.choice(_SUFFIXES)}"
        path = f"{folder}/{name}" if folder else name
        size = int(min(256 * 1024, max(64, rng.lognormvariate(math.log(4096), 1.0))))
        parts: list[bytes] = []
        total = 0
        with_needle = rng.random() < 0.3
        while total < size:
            if with_needle and rng.random() < 0.02:
                line = b"    return " + NEEDLE + b"(value)  # bench\n"
            else:
                line = rng.choice(corpus)
            parts.append(line)
            total += len(line)
        files.append(SmallFile(path, b"".join(parts)))
    return files


def tree_dirs(files: list[SmallFile]) -> list[str]:
    """Every directory the files need, parents first."""
    seen: set[str] = set()
    for f in files:
        parts = f.path.split("/")[:-1]
        for depth in range(1, len(parts) + 1):
            seen.add("/".join(parts[:depth]))
    return sorted(seen, key=lambda d: (d.count("/"), d))


def write_tarball(path: Path, files: list[SmallFile]) -> None:
    """A plain tar of the set: directories first (0755), files (0644), owner root, fixed mtime."""
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tar:
        for d in tree_dirs(files):
            info = tarfile.TarInfo(d)
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            info.mtime = TAR_MTIME
            tar.addfile(info)
        for f in files:
            info = tarfile.TarInfo(f.path)
            info.size = len(f.data)
            info.mode = 0o644
            info.mtime = TAR_MTIME
            tar.addfile(info, io.BytesIO(f.data))
