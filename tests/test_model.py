"""The filesystem core against a plain model, by Hypothesis's stateful testing: random
operations on a small tree, in-process over the in-memory store, compared after every step.

What runs (``CoreMachine``): create (with or without O_EXCL/O_TRUNC), open (O_TRUNC too),
writes at random offsets (holes included), reads, flush, release, truncate by path and by
handle, chmod, mkdir, rmdir, unlink, renames of files and directories (over files, over empty
directories, RENAME_NOREPLACE, into themselves), symlink and readlink, the kernel forgetting
its inodes, time passing (the TTL caches expire: ``FakeTime``), and changes made behind the
mount's back through the store (a file written or deleted, then time past every TTL). Open
handles survive renames and unlinks of their files, as in POSIX.

After every step (``agrees``) every directory is listed (names, kinds, sizes, modes), every
entry looked up and every file read through a new handle and through each open readable
handle, and compared with the model; at ``close_all`` and at the end every handle is released
and the bucket must hold exactly the model (a file per key with its bytes, a marker per
directory, no multipart upload left).

A failure is shrunk by Hypothesis to a short sequence of steps and printed as a replayable
program. ``test_a_broken_core_is_caught`` proves the comparison bites: cores broken on
purpose (through public methods only) must fail it.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from s3fmfs.fs.attrs import Kind
from s3fmfs.fs.core import RENAME_NOREPLACE, FsCore
from s3fmfs.fs.errno_map import FsError
from s3fmfs.fs.inodes import ROOT_INODE
from tests.support.core import FakeTime, make_core
from tests.support.fsmodel import KINDS, Kernel, MDir, MFile, MLink, Model
from tests.support.memstore import MemStore
from tests.support.trio_thread import TrioThread

TTL = 5.0
NAMES = ("a", "b", "c")
PATHS = [
    *NAMES,
    *(f"{d}/{n}" for d in NAMES for n in NAMES),
    *(f"{d}/{d}/{n}" for d in NAMES[:2] for n in NAMES[:2]),
]
paths = st.sampled_from(PATHS)
chunks = st.binary(max_size=40)
offsets = st.integers(0, 120)
sizes = st.integers(0, 150)
modes = st.sampled_from([0o600, 0o644, 0o755])
which = st.integers(0, 7)  # an open handle, modulo how many are open
links = st.sampled_from([b"a", b"../b", b"c/d/e"])

#: Examples × steps: at least 5,000 operations a run (steps vary per example, up to the count).
MODEL_SETTINGS = settings(
    max_examples=int(os.environ.get("S3FMFS_MODEL_EXAMPLES", "80")),
    stateful_step_count=int(os.environ.get("S3FMFS_MODEL_STEPS", "100")),
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)


@dataclass(eq=False)
class Open:
    """One open file: its handle, inode and model file (which follows it through renames)."""

    fh: int
    ino: int
    file: MFile
    readable: bool
    writable: bool


@dataclass
class Outcome:
    value: Any = None
    err: int | None = None

    def __repr__(self) -> str:
        return errno.errorcode.get(self.err, str(self.err)) if self.err else f"ok {self.value!r}"


async def attempt(afn: Callable[..., Awaitable[Any]], *args: Any) -> Outcome:
    try:
        return Outcome(await afn(*args))
    except FsError as exc:
        return Outcome(err=exc.errno)


class CoreMachine(RuleBasedStateMachine):
    """Random operations on the core and the model (see the module docstring)."""

    #: Applied to each new core (the broken-core test breaks it here).
    breakage: ClassVar[Callable[[FsCore, MemStore], None] | None] = None

    def __init__(self) -> None:
        super().__init__()
        self.time = FakeTime()
        self.store = MemStore(page_size=2, clock=self.time.clock)
        self.core = make_core(
            self.store, time=self.time, uid=0, gid=0, stat_ttl=TTL, dir_ttl=TTL, neg_ttl=TTL
        )
        if self.breakage is not None:
            type(self).breakage(self.core, self.store)  # type: ignore[misc]
        self.kernel = Kernel(self.core)
        self.model = Model()
        self.open: list[Open] = []
        self.trio = TrioThread()

    def teardown(self) -> None:
        try:
            self.close_all()
            self.trio.run(self.core.destroy)
        finally:
            self.trio.close()

    # -- helpers -----------------------------------------------------------------------------------

    def call(self, afn: Callable[..., Awaitable[Any]], *args: Any) -> Outcome:
        return self.trio.run(attempt, afn, *args)

    @staticmethod
    def expect(what: str, got: Outcome, err: int | None, value: Any = None) -> None:
        wanted = Outcome(value, err)
        if err is not None:
            assert got.err == err, f"{what}: expected {wanted}, got {got}"
        else:
            assert got.err is None, f"{what}: expected success, got {got}"
            if value is not None:
                assert got.value == value, f"{what}: expected {wanted}, got {got}"

    def pick(self, i: int, *, readable: bool = False, writable: bool = False) -> Open | None:
        fit = [
            o for o in self.open if (o.readable or not readable) and (o.writable or not writable)
        ]
        return fit[i % len(fit)] if fit else None

    def handles_on(self, entry: object) -> bool:
        return any(o.file is entry for o in self.open)

    # -- files -------------------------------------------------------------------------------------

    @rule(path=paths, excl=st.booleans(), trunc=st.booleans(), rdwr=st.booleans())
    def create(self, path: str, excl: bool, trunc: bool, rdwr: bool) -> None:
        existing = self.model.entries.get(path)
        if isinstance(existing, MLink) and not excl:
            return  # the kernel would follow the link
        flags = (os.O_RDWR if rdwr else os.O_WRONLY) | (os.O_EXCL if excl else 0)
        flags |= os.O_TRUNC if trunc else 0

        async def run() -> tuple[int, int, int]:
            parent, name = await self.kernel.parent(path)
            fh, ino, attr = await self.core.create(parent, name, 0o644, flags, 0, 0)
            self.kernel.took(ino)
            return fh, ino, attr.size

        got = self.call(run)
        err = self.model.parent_error(path)
        if err is None and existing is not None:
            err = errno.EEXIST if excl else errno.EISDIR if isinstance(existing, MDir) else None
        self.expect(f"create {path}", got, err)
        if err is not None:
            return
        if existing is None:
            existing = self.model.entries[path] = MFile()
        assert isinstance(existing, MFile)
        if trunc:
            existing.data.clear()
        fh, ino, size = got.value
        self.open.append(Open(fh, ino, existing, rdwr, True))
        assert size == len(existing.data), f"create {path}: size {size}"

    @rule(path=paths, mode=st.sampled_from(["r", "w", "rw"]), trunc=st.booleans())
    def open_file(self, path: str, mode: str, trunc: bool) -> None:
        existing = self.model.entries.get(path)
        if isinstance(existing, MLink):
            return
        flags = {"r": os.O_RDONLY, "w": os.O_WRONLY, "rw": os.O_RDWR}[mode]
        trunc = trunc and mode != "r"
        flags |= os.O_TRUNC if trunc else 0

        async def run() -> tuple[int, int]:
            ino, _ = await self.kernel.walk(path)
            return await self.core.open(ino, flags), ino

        got = self.call(run)
        err = self.model.lookup_error(path)
        if err is None and isinstance(existing, MDir):
            err = errno.EISDIR
        self.expect(f"open {path} {mode}", got, err)
        if err is None:
            assert isinstance(existing, MFile)
            if trunc:
                existing.data.clear()
            fh, ino = got.value
            self.open.append(Open(fh, ino, existing, "r" in mode, "w" in mode))

    @precondition(lambda self: any(o.writable for o in self.open))
    @rule(i=which, offset=offsets, data=chunks)
    def write(self, i: int, offset: int, data: bytes) -> None:
        handle = self.pick(i, writable=True)
        assert handle is not None
        got = self.call(self.core.write, handle.fh, offset, data)
        self.expect("write", got, None, len(data))
        content = handle.file.data
        if len(content) < offset:
            content.extend(bytes(offset - len(content)))
        content[offset : offset + len(data)] = data

    @precondition(lambda self: any(o.readable for o in self.open))
    @rule(i=which, offset=offsets, size=st.integers(1, 150))
    def read(self, i: int, offset: int, size: int) -> None:
        handle = self.pick(i, readable=True)
        assert handle is not None
        got = self.call(self.core.read, handle.fh, offset, size)
        self.expect("read", got, None, bytes(handle.file.data[offset : offset + size]))

    @precondition(lambda self: self.open)
    @rule(i=which, fsync=st.booleans())
    def flush(self, i: int, fsync: bool) -> None:
        handle = self.pick(i)
        assert handle is not None
        if fsync:
            got = self.call(self.core.fsync, handle.fh, False)
        else:
            got = self.call(self.core.flush, handle.fh)
        self.expect("flush", got, None)

    @precondition(lambda self: self.open)
    @rule(i=which)
    def release(self, i: int) -> None:
        handle = self.pick(i)
        assert handle is not None
        self.open.remove(handle)
        self.expect("release", self.call(self.core.release, handle.fh), None)

    @rule(path=paths, size=sizes)
    def truncate(self, path: str, size: int) -> None:
        async def run() -> int:
            ino, _ = await self.kernel.walk(path)
            return (await self.core.setattr(ino, size=size)).size

        got = self.call(run)
        entry = self.model.entries.get(path)
        err = self.model.lookup_error(path)
        if err is None and not isinstance(entry, MFile):
            err = errno.EISDIR if isinstance(entry, MDir) else errno.EINVAL
        self.expect(f"truncate {path} {size}", got, err, None if err else size)
        if isinstance(entry, MFile) and err is None:
            del entry.data[size:]
            entry.data.extend(bytes(size - len(entry.data)))

    @precondition(lambda self: any(o.writable for o in self.open))
    @rule(i=which, size=sizes)
    def ftruncate(self, i: int, size: int) -> None:
        handle = self.pick(i, writable=True)
        assert handle is not None

        async def run() -> int:
            return (await self.core.setattr(handle.ino, size=size, fh=handle.fh)).size

        self.expect(f"ftruncate {size}", self.call(run), None, size)
        del handle.file.data[size:]
        handle.file.data.extend(bytes(size - len(handle.file.data)))

    @rule(path=paths, mode=modes)
    def chmod(self, path: str, mode: int) -> None:
        if isinstance(self.model.entries.get(path), MLink):
            return  # chmod follows links (Linux has no lchmod)

        async def run() -> int:
            ino, _ = await self.kernel.walk(path)
            return stat.S_IMODE((await self.core.setattr(ino, mode=mode)).mode)

        got = self.call(run)
        entry = self.model.entries.get(path)
        err = self.model.lookup_error(path)
        self.expect(f"chmod {path} {mode:o}", got, err, None if err else mode)
        if isinstance(entry, MFile | MDir) and err is None:
            entry.mode = mode

    # -- namespace ---------------------------------------------------------------------------------

    @rule(path=paths, mode=modes)
    def mkdir(self, path: str, mode: int) -> None:
        async def run() -> int:
            parent, name = await self.kernel.parent(path)
            ino, _ = await self.core.mkdir(parent, name, mode, 0, 0)
            return self.kernel.took(ino)

        got = self.call(run)
        err = self.model.parent_error(path)
        if err is None and path in self.model.entries:
            err = errno.EEXIST
        self.expect(f"mkdir {path}", got, err)
        if err is None:
            self.model.entries[path] = MDir(mode)

    @rule(path=paths)
    def rmdir(self, path: str) -> None:
        async def run() -> None:
            parent, name = await self.kernel.parent(path)
            await self.core.rmdir(parent, name)

        got = self.call(run)
        entry = self.model.entries.get(path)
        err = self.model.lookup_error(path)
        if err is None and not isinstance(entry, MDir):
            err = errno.ENOTDIR
        if err is None and self.model.under(path):
            err = errno.ENOTEMPTY
        self.expect(f"rmdir {path}", got, err)
        if err is None:
            del self.model.entries[path]

    @rule(path=paths)
    def unlink(self, path: str) -> None:
        async def run() -> None:
            parent, name = await self.kernel.parent(path)
            await self.core.unlink(parent, name)

        got = self.call(run)
        err = self.model.lookup_error(path)
        if err is None and isinstance(self.model.entries[path], MDir):
            err = errno.EISDIR
        self.expect(f"unlink {path}", got, err)
        if err is None:
            del self.model.entries[path]

    @rule(src=paths, dst=paths, noreplace=st.booleans())
    def rename(self, src: str, dst: str, noreplace: bool) -> None:
        async def run() -> None:
            old_parent, old_name = await self.kernel.parent(src)
            new_parent, new_name = await self.kernel.parent(dst)
            flags = RENAME_NOREPLACE if noreplace else 0
            await self.core.rename(old_parent, old_name, new_parent, new_name, flags)

        got = self.call(run)
        entries = self.model.entries
        source, target = entries.get(src), entries.get(dst)
        src_dir, dst_dir = src.rpartition("/")[0], dst.rpartition("/")[0]
        err = (
            self.model.walk_error(src_dir)
            or self.model.walk_error(dst_dir)
            or self.model.not_dir(src_dir)
            or self.model.not_dir(dst_dir)
        )
        if err is None and src == dst:
            self.expect(f"rename {src} {dst}", got, None)
            return
        if err is None and source is None:
            err = errno.ENOENT
        elif err is None and isinstance(source, MDir) and dst.startswith(src + "/"):
            err = errno.EINVAL
        elif err is None and target is not None:
            if noreplace:
                err = errno.EEXIST
            elif isinstance(source, MDir) and not isinstance(target, MDir):
                err = errno.ENOTDIR
            elif not isinstance(source, MDir) and isinstance(target, MDir):
                err = errno.EISDIR
            elif isinstance(target, MDir) and self.model.under(dst):
                err = errno.ENOTEMPTY
        self.expect(f"rename {src} {dst}", got, err)
        if err is None:
            self.model.move(src, dst)

    @rule(path=paths, link=links)
    def symlink(self, path: str, link: bytes) -> None:
        async def run() -> int:
            parent, name = await self.kernel.parent(path)
            ino, attr = await self.core.symlink(parent, name, link, 0, 0)
            self.kernel.took(ino)
            return attr.size

        got = self.call(run)
        err = self.model.parent_error(path)
        if err is None and path in self.model.entries:
            err = errno.EEXIST
        self.expect(f"symlink {path}", got, err, None if err else len(link))
        if err is None:
            self.model.entries[path] = MLink(link)

    @rule(path=paths)
    def readlink(self, path: str) -> None:
        async def run() -> bytes:
            ino, _ = await self.kernel.walk(path)
            return await self.core.readlink(ino)

        got = self.call(run)
        entry = self.model.entries.get(path)
        err = self.model.lookup_error(path)
        if err is None and not isinstance(entry, MLink):
            err = errno.EINVAL
        self.expect(
            f"readlink {path}", got, err, entry.target if isinstance(entry, MLink) else None
        )

    # -- the world around the core -----------------------------------------------------------------

    @rule()
    def kernel_forgets(self) -> None:
        self.kernel.forget_all()

    @rule(seconds=st.sampled_from([0.5, 3.0, TTL + 1]))
    def time_passes(self, seconds: float) -> None:
        self.time.advance(seconds)

    @rule(path=paths, data=chunks)
    def written_behind(self, path: str, data: bytes) -> None:
        """Another client writes a file (never one open here); seen once the TTLs passed."""
        entry = self.model.entries.get(path)
        if self.model.parent_error(path) or not (entry is None or isinstance(entry, MFile)):
            return
        if entry is not None and self.handles_on(entry):
            return
        self.store.put_object(path, data)
        self.model.entries[path] = MFile(bytearray(data))
        self.time.advance(TTL + 1)

    @rule(path=paths)
    def deleted_behind(self, path: str) -> None:
        """Another client deletes a file (never one open here)."""
        entry = self.model.entries.get(path)
        if not isinstance(entry, MFile) or self.handles_on(entry):
            return
        self.store.remove_object(path)
        del self.model.entries[path]
        self.time.advance(TTL + 1)

    @rule()
    def close_all(self) -> None:
        """Every handle released: the bucket holds exactly the model."""
        for handle in list(self.open):
            self.open.remove(handle)
            self.expect("release", self.call(self.core.release, handle.fh), None)
        wanted: dict[str, bytes] = {}
        for path, entry in self.model.entries.items():
            if isinstance(entry, MFile):
                wanted[path] = bytes(entry.data)
            elif isinstance(entry, MDir):
                wanted[path + "/"] = b""
            else:
                wanted[path] = entry.target
        found = {k: self.store.body(k) for k in self.store.keys_under()}
        assert found == wanted, f"bucket {found} != model {wanted}"
        assert not self.store.uploads, f"multipart uploads left: {self.store.uploads}"

    # -- the comparison ----------------------------------------------------------------------------

    @invariant()
    def agrees(self) -> None:
        self.trio.run(self._compare)

    async def _compare(self) -> None:
        kernel, model = self.kernel, self.model
        for directory in model.dirs():
            ino = (await kernel.walk(directory))[0] if directory else ROOT_INODE
            listed = {
                name: (a.kind, a.size if a.kind is Kind.FILE else None, stat.S_IMODE(a.mode))
                for name, a in (await kernel.listdir(ino)).items()
            }
            wanted = {
                name: (
                    KINDS[type(e)],
                    len(e.data) if isinstance(e, MFile) else None,
                    0o777 if isinstance(e, MLink) else e.mode,
                )
                for name, e in model.children(directory).items()
            }
            assert listed == wanted, f"listing of {directory!r}: {listed} != model {wanted}"
        for path, entry in sorted(model.entries.items()):
            ino, attr = await kernel.walk(path)
            assert attr.kind is KINDS[type(entry)], f"{path}: {attr.kind}"
            if isinstance(entry, MFile):
                assert attr.size == len(entry.data), f"{path}: size {attr.size}"
                fh = await self.core.open(ino, os.O_RDONLY)
                try:
                    data = await self.core.read(fh, 0, len(entry.data) + 10)
                finally:
                    await self.core.release(fh)
                assert data == entry.data, f"{path}: read {data!r} != model {bytes(entry.data)!r}"
            elif isinstance(entry, MLink):
                assert await self.core.readlink(ino) == entry.target, path
        for handle in self.open:
            if handle.readable:
                data = await self.core.read(handle.fh, 0, len(handle.file.data) + 10)
                assert data == handle.file.data, f"open handle {handle.fh}: read {data!r}"


def test_core_agrees_with_the_model() -> None:
    run_state_machine_as_test(CoreMachine, settings=MODEL_SETTINGS)
