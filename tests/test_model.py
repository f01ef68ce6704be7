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

import pytest
from hypothesis import HealthCheck, Phase, settings
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
from s3fmfs.fs.store import PutResult
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
#: Where an operation goes: (index, name, dice). Mostly relative to the tree as it is (a name
#: in an existing directory, or an existing entry), one time in eight any path of ``PATHS``
#: (missing parents, files as parents: ENOENT and ENOTDIR).
places = st.tuples(st.integers(0, 63), st.sampled_from(NAMES), st.integers(0, 7))
Place = tuple[int, str, int]
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


#: Comparisons made (one after each operation, and one at each run's start), by machine.
STEPS: dict[str, int] = {}


class CoreMachine(RuleBasedStateMachine):
    """Random operations on the core and the model (see the module docstring)."""

    #: Applied to each new core (the broken-core test breaks it here).
    breakages: ClassVar[tuple[Callable[[FsCore, MemStore], None], ...]] = ()
    #: The mount's prefix in the bucket, and its cache TTLs (seconds).
    prefix: ClassVar[str] = ""
    ttl: ClassVar[float] = TTL

    def __init__(self) -> None:
        super().__init__()
        self.time = FakeTime()
        self.store = MemStore(page_size=2, clock=self.time.clock)
        self.core = make_core(
            self.store,
            time=self.time,
            prefix=self.prefix,
            uid=0,
            gid=0,
            stat_ttl=self.ttl,
            dir_ttl=self.ttl,
            neg_ttl=self.ttl,
        )
        self.foreign = {"outside": b"not ours", f"{self.prefix.rstrip('/')}x": b"near"}
        if self.prefix:  # keys beside the mount's prefix: never seen, never touched
            for key, data in self.foreign.items():
                self.store.put_object(key, data)
        for breakage in self.breakages:
            breakage(self.core, self.store)
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

    def new_path(self, where: Place) -> str:
        """A name in an existing directory (taken or not), or any path."""
        index, name, dice = where
        if dice == 0:
            return PATHS[index % len(PATHS)]
        dirs = self.model.dirs()
        directory = dirs[index % len(dirs)]
        return f"{directory}/{name}" if directory else name

    def old_path(self, where: Place, *, directory: bool = False) -> str:
        """An existing entry (a directory, when asked and there is one), or any path."""
        index, _, dice = where
        existing = sorted(self.model.entries)
        if directory and len(self.model.dirs()) > 1:
            existing = self.model.dirs()[1:]
        if dice == 0 or not existing:
            return self.new_path(where)
        return existing[index % len(existing)]

    def handles_on(self, entry: object) -> bool:
        return any(o.file is entry for o in self.open)

    # -- files -------------------------------------------------------------------------------------

    @rule(where=places, excl=st.booleans(), trunc=st.booleans(), rdwr=st.booleans())
    def create(self, where: Place, excl: bool, trunc: bool, rdwr: bool) -> None:
        path = self.new_path(where)
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

    @rule(where=places, mode=st.sampled_from(["r", "w", "rw"]), trunc=st.booleans())
    def open_file(self, where: Place, mode: str, trunc: bool) -> None:
        path = self.old_path(where)
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

    @rule(where=places, size=sizes)
    def truncate(self, where: Place, size: int) -> None:
        path = self.old_path(where)

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

    @rule(where=places, mode=modes)
    def chmod(self, where: Place, mode: int) -> None:
        path = self.old_path(where)
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

    @rule(where=places, mode=modes)
    def mkdir(self, where: Place, mode: int) -> None:
        path = self.new_path(where)

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

    @rule(where=places)
    def rmdir(self, where: Place) -> None:
        path = self.old_path(where)

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

    @rule(where=places)
    def unlink(self, where: Place) -> None:
        path = self.old_path(where)

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

    @rule(source=places, destination=places, noreplace=st.booleans(), directory=st.booleans())
    def rename(self, source: Place, destination: Place, noreplace: bool, directory: bool) -> None:
        src = self.old_path(source, directory=directory)
        dst = self.new_path(destination)

        async def run() -> None:
            old_parent, old_name = await self.kernel.parent(src)
            new_parent, new_name = await self.kernel.parent(dst)
            flags = RENAME_NOREPLACE if noreplace else 0
            await self.core.rename(old_parent, old_name, new_parent, new_name, flags)

        got = self.call(run)
        entries = self.model.entries
        moving, replaced = entries.get(src), entries.get(dst)
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
        if err is None and moving is None:
            err = errno.ENOENT
        elif err is None and isinstance(moving, MDir) and dst.startswith(src + "/"):
            err = errno.EINVAL
        elif err is None and replaced is not None:
            if noreplace:
                err = errno.EEXIST
            elif isinstance(moving, MDir) and not isinstance(replaced, MDir):
                err = errno.ENOTDIR
            elif not isinstance(moving, MDir) and isinstance(replaced, MDir):
                err = errno.EISDIR
            elif isinstance(replaced, MDir) and self.model.under(dst):
                err = errno.ENOTEMPTY
        self.expect(f"rename {src} {dst}", got, err)
        if err is None:
            self.model.move(src, dst)

    @rule(where=places, link=links)
    def symlink(self, where: Place, link: bytes) -> None:
        path = self.new_path(where)

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

    @rule(where=places)
    def readlink(self, where: Place) -> None:
        path = self.old_path(where)

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

    @rule(where=places, data=chunks)
    def written_behind(self, where: Place, data: bytes) -> None:
        """Another client writes a file (never one open here); seen once the TTLs passed."""
        path = self.new_path(where)
        entry = self.model.entries.get(path)
        if self.model.parent_error(path) or not (entry is None or isinstance(entry, MFile)):
            return
        if entry is not None and self.handles_on(entry):
            return
        self.store.put_object(self.prefix + path, data)
        self.model.entries[path] = MFile(bytearray(data))
        self.time.advance(TTL + 1)

    @rule(where=places)
    def deleted_behind(self, where: Place) -> None:
        """Another client deletes a file (never one open here)."""
        path = self.old_path(where)
        entry = self.model.entries.get(path)
        if not isinstance(entry, MFile) or self.handles_on(entry):
            return
        self.store.remove_object(self.prefix + path)
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
        found = {
            k[len(self.prefix) :]: self.store.body(k) for k in self.store.keys_under(self.prefix)
        }
        if self.prefix:
            assert {k: self.store.body(k) for k in self.foreign} == self.foreign
        assert found == wanted, f"bucket {found} != model {wanted}"
        assert not self.store.uploads, f"multipart uploads left: {self.store.uploads}"

    # -- the comparison ----------------------------------------------------------------------------

    @invariant()
    def agrees(self) -> None:
        STEPS[type(self).__name__] = STEPS.get(type(self).__name__, 0) + 1
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
    STEPS.pop(CoreMachine.__name__, None)
    run_state_machine_as_test(CoreMachine, settings=MODEL_SETTINGS)
    if "S3FMFS_MODEL_EXAMPLES" not in os.environ and "S3FMFS_MODEL_STEPS" not in os.environ:
        assert STEPS[CoreMachine.__name__] >= 5_000  # checked states: operations plus one a run


class UncachedPrefixMachine(CoreMachine):
    """The same under a prefix of the bucket, with every cache off (TTLs 0)."""

    prefix = "mnt/point/"
    ttl = 0.0


def test_core_agrees_with_the_model_under_a_prefix_without_caches() -> None:
    run_state_machine_as_test(
        UncachedPrefixMachine,
        settings=settings(MODEL_SETTINGS, max_examples=max(1, MODEL_SETTINGS.max_examples // 8)),
    )


# -- the comparison bites: cores broken on purpose ------------------------------------------------


def _drop_last_byte(core: FsCore, store: MemStore) -> None:
    """Every write of more than one byte loses its last one (and says it wrote them all)."""
    write = core.write

    async def broken(fh: int, offset: int, data: bytes) -> int:
        await write(fh, offset, data[:-1] if len(data) > 1 else data)
        return len(data)

    core.write = broken  # type: ignore[method-assign]


def _unlink_keeps_the_key(core: FsCore, store: MemStore) -> None:
    """unlink answers success but the object stays in the bucket."""
    unlink = core.unlink

    async def broken(parent_ino: int, name: bytes) -> None:
        delete = store.delete

        async def kept(key: str) -> None:
            store.calls["delete"] += 1

        store.delete = kept  # type: ignore[method-assign]
        try:
            await unlink(parent_ino, name)
        finally:
            store.delete = delete  # type: ignore[method-assign]

    core.unlink = broken  # type: ignore[method-assign]


def _rename_skips_a_copy(core: FsCore, store: MemStore) -> None:
    """A rename answers success but drops its first copy (a file's, or a directory's first
    child), whose source is then deleted: lost. Not a later copy: how many keys a rename copies
    depends on the uploads finished by then (timing), and a busy machine may make few multi-key
    renames in a run."""
    rename = core.rename

    async def broken(*args: Any) -> None:
        copy = store.copy
        copies = 0

        async def skipping(src: str, dst: str, *more: Any) -> Any:
            nonlocal copies
            copies += 1
            if copies == 1:
                return PutResult()  # not copied; its source is deleted with the others: lost
            return await copy(src, dst, *more)

        store.copy = skipping  # type: ignore[method-assign,assignment]
        try:
            await rename(*args)
        finally:
            store.copy = copy  # type: ignore[method-assign]

    core.rename = broken  # type: ignore[method-assign,assignment]


BREAKAGES = {
    "write drops its last byte": _drop_last_byte,
    "unlink keeps the key": _unlink_keeps_the_key,
    "rename skips a copy": _rename_skips_a_copy,
}


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_a_broken_core_is_caught(breakage: str) -> None:
    broken = type("BrokenMachine", (CoreMachine,), {"breakages": (BREAKAGES[breakage],)})
    with pytest.raises(AssertionError) as caught:
        run_state_machine_as_test(
            broken,
            settings=settings(
                MODEL_SETTINGS,
                max_examples=300,
                stateful_step_count=50,
                phases=[Phase.generate],  # found is enough here: no time spent shrinking
                derandomize=True,  # the same examples every run: never flaky
            ),
        )
    assert "model" in str(caught.value) or "expected" in str(caught.value)
