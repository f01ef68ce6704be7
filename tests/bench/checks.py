"""What each measurement checks; pure functions over outputs, raising :class:`CheckError`.

A measurement whose check fails counts as failed, never as a number.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

from tests.bench.data import SmallFile, big_bytes, sample_ranges


class CheckError(AssertionError):
    """A workload's result is not what it should be."""


_DD_BYTES = re.compile(r"^(\d+) bytes", re.MULTILINE)


def dd_bytes(stderr: str) -> int:
    """The byte count of dd's summary line (``LC_ALL=C``)."""
    found = _DD_BYTES.findall(stderr)
    if not found:
        raise CheckError(f"no byte count in dd's output: {stderr.strip()[-300:]!r}")
    return int(found[-1])


def check_size(what: str, got: int, expected: int) -> None:
    if got != expected:
        raise CheckError(f"{what}: {got} bytes, expected {expected}")


def check_big_samples(what: str, read: Callable[[int, int], bytes], size: int) -> None:
    """Sampled ranges of the big object, read with ``read(offset, length)``, are right."""
    for offset, length in sample_ranges(size):
        got = read(offset, length)
        if got != big_bytes(offset, length):
            raise CheckError(f"{what}: wrong bytes at [{offset}, {offset + length})")


def check_ls_output(stdout: str, expected: Mapping[str, int]) -> None:
    """``ls -l`` lists exactly the expected files with their sizes."""
    seen: dict[str, int] = {}
    for line in stdout.splitlines():
        if not line.startswith("-"):
            continue
        fields = line.split(None, 8)
        if len(fields) < 9:
            raise CheckError(f"unparsable ls -l line: {line!r}")
        seen[fields[8]] = int(fields[4])
    if len(seen) != len(expected):
        raise CheckError(f"ls -l shows {len(seen)} files, expected {len(expected)}")
    wrong = [name for name, size in expected.items() if seen.get(name) != size]
    if wrong:
        name = wrong[0]
        raise CheckError(
            f"ls -l: {len(wrong)} files missing or of the wrong size, e.g. {name} "
            f"({seen.get(name)} != {expected[name]})"
        )


def check_grep_output(stdout: str, root: str, files: list[SmallFile]) -> None:
    """``grep -r -c NEEDLE ROOT`` printed one ``path:count`` per file, counts right."""
    expected = {f"{root}/{f.path}": f.matches for f in files}
    seen: dict[str, int] = {}
    for line in stdout.splitlines():
        path, _, count = line.rpartition(":")
        seen[path] = int(count)
    if len(seen) != len(expected):
        raise CheckError(f"grep -r saw {len(seen)} files, expected {len(expected)}")
    wrong = [p for p, n in expected.items() if seen.get(p) != n]
    if wrong:
        raise CheckError(f"grep -r: wrong counts for {len(wrong)} files, e.g. {wrong[0]}")


def check_stat_output(stdout: str, root: str, files: list[SmallFile]) -> None:
    """``find ROOT -type f -exec stat -c '%s %n' {} +`` gave every file with its size."""
    expected = {f"{root}/{f.path}": len(f.data) for f in files}
    seen: dict[str, int] = {}
    for line in stdout.splitlines():
        size, _, path = line.partition(" ")
        seen[path] = int(size)
    if seen != expected:
        missing = sorted(set(expected) - set(seen))
        extra = sorted(set(seen) - set(expected))
        wrong = [p for p in expected if p in seen and seen[p] != expected[p]]
        raise CheckError(
            f"stat: {len(seen)} files seen, expected {len(expected)}; missing {missing[:2]}, "
            f"extra {extra[:2]}, wrong size {wrong[:2]}"
        )


def listing_complete(listed: Mapping[str, int], files: list[SmallFile]) -> bool:
    """Whether a listing (relative key → size; directory markers, the prefix's own marker
    ``""`` included, ignored) holds every file, and nothing else."""
    objects = {k: v for k, v in listed.items() if k and not k.endswith("/")}
    if len(objects) != len(files):
        return False
    return all(objects.get(f.path) == len(f.data) for f in files)


def check_bodies(what: str, got: Mapping[str, bytes], files: list[SmallFile]) -> None:
    """Sampled bodies read back are the files' bytes."""
    by_path = {f.path: f.data for f in files}
    for path, data in got.items():
        if data != by_path[path]:
            raise CheckError(f"{what}: {path} has the wrong content ({len(data)} bytes)")


def sample_files(files: list[SmallFile], count: int = 10) -> list[SmallFile]:
    """A deterministic sample: the largest file, then evenly spread ones."""
    if len(files) <= count:
        return list(files)
    step = len(files) / (count - 1)
    picked = {max(files, key=lambda f: len(f.data)).path: None}
    for k in range(count - 1):
        picked[files[int(k * step)].path] = None
    by_path = {f.path: f for f in files}
    return [by_path[p] for p in picked]
