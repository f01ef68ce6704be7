"""A directory rename is atomic for the mount (``fs/treelock.py``), and symlink targets keep
to what readlink can return.

- Core tests (no mount, over moto): a store whose copies wait at a gate holds a directory
  rename in the middle of its copies while other tasks create, upload, rename and unlink
  under the old path; they must wait, then go on under the new path, and no key may stay
  under the old prefix. And the other order: a rename waits for an upload in flight.
- Mounted tests: the real ``mv`` of a folder of 300 files while shell loops (``echo >``) and
  threads of the test keep creating files in it. After: every file whose create succeeded is
  under the new name with its content, no key is under the old prefix, the old name stays
  absent (also after ``neg_ttl``), and every create started after ``mv`` returned failed
  ENOENT.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from s3fmfs.client import S3fmAuthConnection
from s3fmfs.fs.core import FsCore
from s3fmfs.fs.errno_map import FsError
from s3fmfs.fs.inodes import ROOT_INODE
from s3fmfs.fs.s3store import S3Store
from s3fmfs.fs.settings import FsSettings
from s3fmfs.fs.store import PutBody, PutResult
from tests.support.mount import mounted
from tests.support.servers import S3Server, unique_bucket
from tests.support.stores import CountingStore
from tests.test_fs_core import Env, expect_errno, walk

# -- core: a rename held at a gate ---------------------------------------------------------------


class GatedStore(CountingStore):
    """Copies (or puts) wait at ``gate`` once it is armed; ``reached`` says one got there."""

    def __init__(self, inner: S3Store) -> None:
        super().__init__(inner)
        self.gate_copies: trio.Event | None = None
        self.gate_puts: trio.Event | None = None
        self.reached = trio.Event()
        self.waiting = 0  # calls waiting at a gate now

    async def copy(
        self,
        src: str,
        dst: str,
        metadata: Any = None,
        content_type: str | None = None,
    ) -> PutResult:
        if self.gate_copies is not None:
            self.reached.set()
            self.waiting += 1
            await self.gate_copies.wait()
            self.waiting -= 1
        return await super().copy(src, dst, metadata, content_type)

    async def put(
        self, key: str, body: PutBody, metadata: Any, content_type: str | None = None
    ) -> PutResult:
        if self.gate_puts is not None:
            self.reached.set()
            self.waiting += 1
            await self.gate_puts.wait()
            self.waiting -= 1
        return await super().put(key, body, metadata, content_type)


@pytest.fixture
async def env(conn: S3fmAuthConnection) -> Env:
    bucket = unique_bucket("mv")
    await conn.create_bucket(bucket)
    return Env(conn, bucket, page_size=3)


def gated_core(env: Env) -> tuple[FsCore, GatedStore]:
    store = GatedStore(env.raw)
    return FsCore(store, FsSettings(uid=1000, gid=1000), timer=env.timer), store


class Held:
    """A rename started by ``rename_held``: ``done`` once it returned, with its ``error``."""

    def __init__(self) -> None:
        self.done = trio.Event()
        self.error: FsError | None = None


async def rename_held(
    core: FsCore, store: GatedStore, nursery: trio.Nursery, old: bytes, new: bytes
) -> Held:
    """Start renaming root's ``old`` to ``new`` and return once it waits in its copies."""
    store.gate_copies = trio.Event()
    held = Held()

    async def run() -> None:
        try:
            await core.rename(ROOT_INODE, old, ROOT_INODE, new)
        except FsError as exc:
            held.error = exc
        held.done.set()

    nursery.start_soon(run)
    await store.reached.wait()
    return held


async def until(condition: Any) -> None:
    """Wait (polling) for ``condition()``: tasks waiting on requests count as blocked for
    ``wait_all_tasks_blocked``, so it cannot tell that they reached a claim."""
    with trio.fail_after(30):
        while not condition():
            await trio.sleep(0.01)


async def claims_waiting(core: FsCore, count: int) -> None:
    """Wait until ``count`` claims wait for the held rename (a code without claims: give the
    operations a second to run meanwhile, so that the test shows what they do then)."""
    tree = getattr(core, "tree", None)
    if tree is None:
        await trio.sleep(1)
    else:
        await until(lambda: tree.waiting == count)


async def open_gate(store: GatedStore) -> None:
    """Let the held rename go on."""
    assert store.gate_copies is not None
    store.gate_copies.set()
    store.gate_copies = None


async def test_changes_under_a_moving_directory_wait_and_follow_it(env: Env) -> None:
    for i in range(5):
        await env.put(f"d/f{i}", f"old {i}".encode())
    await env.put("d/sub/gone", b"g")
    await env.put("d/sub/moved", b"m")
    core, store = gated_core(env)
    d_ino, _ = await walk(core, "d")
    sub_ino, _ = await walk(core, "d/sub")
    fh_open, open_ino, _ = await core.create(d_ino, b"open-before", 0o644, os.O_WRONLY, 0, 0)
    await core.write(fh_open, 0, b"written before")
    finished: list[str] = []
    async with trio.open_nursery() as nursery:
        done = await rename_held(core, store, nursery, b"d", b"e")

        async def step(name: str, op: Any) -> None:
            await op
            finished.append(name)

        nursery.start_soon(step, "create", write_file_in(core, d_ino, b"new", b"created"))
        nursery.start_soon(step, "mkdir", core.mkdir(d_ino, b"newdir", 0o755, 0, 0))
        nursery.start_soon(step, "symlink", core.symlink(d_ino, b"ln", b"target", 0, 0))
        nursery.start_soon(step, "flush", core.flush(fh_open))
        nursery.start_soon(step, "unlink", core.unlink(sub_ino, b"gone"))
        nursery.start_soon(step, "rename", core.rename(sub_ino, b"moved", ROOT_INODE, b"out"))
        nursery.start_soon(step, "rmdir", expect_fails(core.rmdir(ROOT_INODE, b"d"), errno.ENOENT))
        await claims_waiting(core, 7)  # all of them wait for the rename
        assert finished == []
        await open_gate(store)
        await done.done.wait()
    assert sorted(finished) == ["create", "flush", "mkdir", "rename", "rmdir", "symlink", "unlink"]
    await core.release(fh_open)
    assert sorted(await env.keys()) == [
        "e/f0",
        "e/f1",
        "e/f2",
        "e/f3",
        "e/f4",
        "e/ln",
        "e/new",
        "e/newdir/",
        "e/open-before",
        "out",
    ]
    assert await env.body("e/new") == b"created"
    assert await env.body("e/open-before") == b"written before"
    assert await env.body("out") == b"m"
    assert core.inodes.get(open_ino).path == "e/open-before"
    with expect_errno(errno.ENOENT):  # by path, the old name is gone
        await core.lookup(ROOT_INODE, b"d")
    with expect_errno(errno.ENOENT):  # nor does it come back from the caches
        await core.lookup(ROOT_INODE, b"d")


async def write_file_in(core: FsCore, parent: int, name: bytes, data: bytes) -> None:
    fh, _, _ = await core.create(parent, name, 0o644, os.O_WRONLY, 0, 0)
    await core.write(fh, 0, data)
    await core.flush(fh)
    await core.release(fh)


async def expect_fails(op: Any, code: int) -> None:
    with expect_errno(code):
        await op


async def test_a_rename_waits_for_changes_in_flight(env: Env) -> None:
    """A mkdir's marker and a symlink's object, both being PUT when the rename starts: the
    rename lists nothing before they are done (an upload at close is the same claim)."""
    await env.put("d/a", b"a")
    core, store = gated_core(env)
    d_ino, _ = await walk(core, "d")
    renamed = trio.Event()
    async with trio.open_nursery() as nursery:
        store.gate_puts = trio.Event()
        nursery.start_soon(core.mkdir, d_ino, b"sub", 0o755, 0, 0)
        nursery.start_soon(core.symlink, d_ino, b"ln", b"a", 0, 0)
        await until(lambda: store.waiting == 2)  # both PUTs (d/sub/, d/ln) in flight

        async def rename() -> None:
            await core.rename(ROOT_INODE, b"d", ROOT_INODE, b"e")
            renamed.set()

        nursery.start_soon(rename)
        await claims_waiting(core, 1)
        list_count = store.count("list")
        await trio.sleep(0.2)
        assert not renamed.is_set() and store.count("list") == list_count  # not even listed
        gate, store.gate_puts = store.gate_puts, None
        gate.set()
    assert sorted(await env.keys()) == ["e/a", "e/ln", "e/sub/"]
    assert await env.body("e/ln") == b"a"


async def test_renames_across_two_moving_trees_do_not_deadlock(env: Env) -> None:
    for key in ("a/x", "a/y", "b/z"):
        await env.put(key, key.encode())
    core, store = gated_core(env)
    a_ino, _ = await walk(core, "a")
    b_ino, _ = await walk(core, "b")
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            done = await rename_held(core, store, nursery, b"a", b"a2")
            nursery.start_soon(core.rename, ROOT_INODE, b"b", ROOT_INODE, b"b2")
            nursery.start_soon(core.rename, a_ino, b"x", b_ino, b"x")  # from one into the other
            nursery.start_soon(core.rename, b_ino, b"z", a_ino, b"z")
            again = core.rename(ROOT_INODE, b"a", ROOT_INODE, b"a3")  # waits, then a is gone
            nursery.start_soon(expect_fails, again, errno.ENOENT)
            await claims_waiting(core, 3)
            await until(lambda: store.waiting >= 3)  # b's rename too
            await open_gate(store)
            await done.done.wait()
    assert done.error is None
    keys = sorted(k for k in await env.keys() if not k.endswith("/"))
    assert keys == ["a2/y", "a2/z", "b2/x"]
    assert await env.body("b2/x") == b"a/x"
    assert await env.body("a2/z") == b"b/z"


async def test_keys_written_by_another_client_meanwhile_are_eio(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    await env.put("d/a", b"a")
    core, store = gated_core(env)
    await walk(core, "d")
    async with trio.open_nursery() as nursery:
        done = await rename_held(core, store, nursery, b"d", b"e")
        await env.put("d/foreign", b"by someone else")  # behind the mount's back
        await open_gate(store)
        await done.done.wait()
    assert done.error is not None and done.error.errno == errno.EIO
    assert sorted(await env.keys()) == ["d/foreign", "e/a"]
    assert "'d/foreign'" in caplog.text and "left there" in caplog.text
    with expect_errno(errno.ENOENT):  # the mount's own view moved all the same
        await core.lookup(ROOT_INODE, b"d")


async def test_treelock_writer_first_and_nesting() -> None:
    from s3fmfs.fs.treelock import TreeLock  # here: the other tests also run without it

    tree = TreeLock()
    order: list[str] = []

    async def shared(path: str, name: str, hold: trio.Event) -> None:
        async with tree.shared([path]):
            order.append(name)
            await hold.wait()
            async with tree.shared([path]):  # nested on the same path: no deadlock
                order.append(name + " again")

    async def exclusive(root: str, name: str) -> None:
        async with tree.exclusive([root]):
            order.append(name)

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            first = trio.Event()
            nursery.start_soon(shared, "d/a", "s1", first)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(exclusive, "d", "x")
            await trio.testing.wait_all_tasks_blocked()
            assert tree.moving("d/a") and not tree.moving("e")
            nursery.start_soon(shared, "d/b", "s2", trio.Event())  # waits: writer first
            nursery.start_soon(exclusive, "d/sub", "inner")  # overlaps: waits
            nursery.start_soon(shared, "e", "other", _set())  # not covered: goes on
            await trio.testing.wait_all_tasks_blocked()
            assert order == ["s1", "other", "other again"]
            first.set()
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
    assert order[:5] == ["s1", "other", "other again", "s1 again", "x"]
    assert sorted(order[5:]) == ["inner", "s2"]  # after x: not overlapping each other


def _set() -> trio.Event:
    event = trio.Event()
    event.set()
    return event


# -- core: symlink targets -------------------------------------------------------------------


async def test_symlink_target_limits(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    core, _ = env.core()
    with expect_errno(errno.ENOENT):
        await core.symlink(ROOT_INODE, b"empty", b"", 0, 0)
    with expect_errno(errno.ENAMETOOLONG):
        await core.symlink(ROOT_INODE, b"long", b"t" * 4096, 0, 0)
    ino, _ = await core.symlink(ROOT_INODE, b"max", b"t" * 4095, 0, 0)
    assert await core.readlink(ino) == b"t" * 4095
    assert sorted(await env.keys()) == ["max"]
    mode = str(0o120777)
    await env.put("foreign", b"f" * 5000, mode=mode)  # made by another client
    ino, _ = await walk(core, "foreign")
    with expect_errno(errno.ENAMETOOLONG):
        await core.readlink(ino)
    assert "'foreign'" in caplog.text


# -- mounted: the real mv while creators run ---------------------------------------------------

needs_fuse = pytest.mark.skipif(
    not os.path.exists("/dev/fuse") or shutil.which("fusermount3") is None,
    reason="needs /dev/fuse and fusermount3 (apt install fuse3)",
)
SHORT_TTLS = ("stat_ttl=1", "dir_ttl=1", "neg_ttl=1")
FILES = 300

#: A creator as a process: ``echo NAME > DIR/NAME`` in a loop until ``stop`` exists; one line
#: per attempt: ``ok WHEN NAME`` or ``fail WHEN NAME MESSAGE``. WHEN is when the attempt
#: started: ``before`` mv started, ``during`` it, or ``after`` it returned (``mv-done``).
SHELL_CREATOR = r"""
i=0
while [ ! -e "$3/stop" ]; do
  n="$2-$i"
  when=before
  if [ -e "$3/mv-started" ]; then when=during; fi
  if [ -e "$3/mv-done" ]; then when=after; fi
  if out=$( { echo "$n" > "$1/$n"; } 2>&1 ); then
    echo "ok $when $n"
  else
    echo "fail $when $n $out"
  fi
  i=$((i+1))
done
"""


@pytest.fixture
def bucket(s3: Any) -> str:
    name = unique_bucket("mv")
    s3.create_bucket(Bucket=name)
    return name


def keys_under(s3: Any, bucket: str, prefix: str) -> dict[str, bytes]:
    keys: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys += [obj["Key"] for obj in page.get("Contents", [])]
    with ThreadPoolExecutor(8) as pool:
        bodies = pool.map(lambda k: s3.get_object(Bucket=bucket, Key=k)["Body"].read(), keys)
        return dict(zip(keys, bodies, strict=True))


class ThreadCreator:
    """Creates ``DIR/NAME-i`` (content: the name) in a thread until stopped."""

    def __init__(
        self, directory: Path, name: str, mv_started: threading.Event, mv_done: threading.Event
    ) -> None:
        self.directory = directory
        self.name = name
        self.mv_started = mv_started
        self.mv_done = mv_done
        self.stop = threading.Event()
        self.attempts: list[tuple[str, str, int | None]] = []  # (when, name, errno or None)
        self.spans: list[tuple[float, float]] = []  # (start, end) of each attempt, monotonic
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        i = 0
        while not self.stop.is_set():
            name = f"{self.name}-{i}"
            when = "during" if self.mv_started.is_set() else "before"
            when = "after" if self.mv_done.is_set() else when
            start = time.monotonic()
            try:
                with open(self.directory / name, "w") as f:
                    f.write(name)
                self.attempts.append((when, name, None))
            except OSError as exc:
                self.attempts.append((when, name, exc.errno))
            self.spans.append((start, time.monotonic()))
            i += 1

    def made(self) -> int:
        return sum(1 for _, _, code in self.attempts if code is None)

    def after_attempts(self) -> int:
        return sum(1 for when, _, _ in self.attempts if when == "after")


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    path = tmp_path / "creators"
    path.mkdir()
    return path


@needs_fuse
def test_mv_of_a_busy_folder_is_atomic(
    moto: S3Server, s3: Any, bucket: str, tmp_path: Path, workdir: Path
) -> None:
    def put(i: int) -> None:
        s3.put_object(Bucket=bucket, Key=f"rw/f{i:03}", Body=f"file {i}".encode())

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(put, range(FILES)))
    t_start = time.monotonic()
    with mounted(moto, bucket, tmp_path=tmp_path, options=SHORT_TTLS) as mnt:
        src, dst = mnt / "rw", mnt / "rw2"
        open_before = open(src / "open-before", "w")  # noqa: SIM115 (closed after the mv)
        open_before.write("first half ")
        open_before.flush()
        mv_started, mv_done = threading.Event(), threading.Event()
        threads = [ThreadCreator(src, f"t{n}", mv_started, mv_done) for n in range(2)]
        shells: list[subprocess.Popen[str]] = []
        try:
            for n in range(2):
                shells.append(
                    subprocess.Popen(
                        ["bash", "-c", SHELL_CREATOR, "creator", str(src), f"s{n}", str(workdir)],
                        stdout=subprocess.PIPE,
                        stderr=subprocess.STDOUT,
                        text=True,
                    )
                )
            for t in threads:
                t.thread.start()
            deadline = time.monotonic() + 30
            while min(t.made() for t in threads) < 20:  # creating busily by now
                assert time.monotonic() < deadline, "the creators made no progress"
                time.sleep(0.05)
            (workdir / "mv-started").touch()
            mv_started.set()
            mv_start = time.monotonic()
            moved = subprocess.run(["mv", str(src), str(dst)], capture_output=True, text=True)
            mv_end = time.monotonic()
            (workdir / "mv-done").touch()
            mv_done.set()
            assert moved.returncode == 0, moved.stderr
            open_before.write("second half")
            open_before.close()  # uploaded after the move: under the new name
            deadline = time.monotonic() + 30
            while min(t.after_attempts() for t in threads) < 5:
                assert time.monotonic() < deadline, "the creators stopped"
                time.sleep(0.05)
            time.sleep(0.3)  # the shell loops try after the mv too
        finally:
            (workdir / "stop").touch()
            for t in threads:
                t.stop.set()
                t.thread.join(30)
            outputs = [proc.communicate(timeout=60)[0] for proc in shells]
            if not open_before.closed:
                open_before.close()
        time.sleep(2.5)  # past neg_ttl and dir_ttl: what the bucket says now
        assert not src.exists() and "rw" not in os.listdir(mnt)
        listed = set(os.listdir(dst))
    # (when, name, errno or None) of every attempt, threads' and shells'
    attempts = [a for t in threads for a in t.attempts]
    for output in outputs:
        for line in output.splitlines():
            result, when, name, *message = line.split(maxsplit=3)
            if result == "fail":
                assert "No such file or directory" in message[0], line
            attempts.append((when, name, None if result == "ok" else errno.ENOENT))
        assert " after " in output, output[-2000:]  # each shell loop tried after the mv too
    # before the mv: all succeed; after it returned: all ENOENT (the old name is gone);
    # started while it ran: either (they waited for it; then the kernel or the moved
    # directory's inode decides), but never another error
    for when, name, code in attempts:
        allowed: dict[str, list[int | None]] = {
            "before": [None],
            "during": [None, errno.ENOENT],
            "after": [errno.ENOENT],
        }
        assert code in allowed[when], (when, name, code)
    ok = [name for _, name, code in attempts if code is None]
    during = [code for when, _, code in attempts if when == "during"]
    overlapping = [s for t in threads for s in t.spans if s[0] < mv_end and s[1] > mv_start]
    # every create that succeeded is under the new name, and nothing is under the old one
    assert keys_under(s3, bucket, "rw/") == {}
    stored = keys_under(s3, bucket, "rw2/")
    expected = {f"rw2/f{i:03}": f"file {i}".encode() for i in range(FILES)}
    expected["rw2/open-before"] = b"first half second half"
    for name in ok:
        expected[f"rw2/{name}"] = (name + ("\n" if name.startswith("s") else "")).encode()
    assert sorted(stored) == sorted(expected)
    bad = [key for key, body in expected.items() if stored[key] != body]
    assert not bad, bad[:10]
    assert listed == {key.removeprefix("rw2/") for key in expected}
    logging.getLogger(__name__).info(
        "creates: %d succeeded; %d started during the mv (%d succeeded); %d threads' creates "
        "overlapped it; %d objects moved; mv took %.2f s; %.1f s in all",
        len(ok),
        len(during),
        during.count(None),
        len(overlapping),
        len(stored) - len(ok),
        mv_end - mv_start,
        time.monotonic() - t_start,
    )


@needs_fuse
def test_symlink_targets_readlink_can_return(
    moto: S3Server, s3: Any, bucket: str, tmp_path: Path
) -> None:
    s3.put_object(Bucket=bucket, Key="foreign", Body=b"f" * 5000, Metadata={"mode": str(0o120777)})
    with mounted(moto, bucket, tmp_path=tmp_path) as mnt:
        os.symlink("t" * 4095, mnt / "max")
        assert os.readlink(mnt / "max") == "t" * 4095
        with pytest.raises(OSError) as info:
            os.readlink(mnt / "foreign")  # made elsewhere: too long for the kernel
        assert info.value.errno == errno.ENAMETOOLONG
        # (the kernel itself refuses these before asking the daemon; the core does too)
        for target, code in (("t" * 4096, errno.ENAMETOOLONG), ("", errno.ENOENT)):
            with pytest.raises(OSError) as info:
                os.symlink(target, mnt / "bad")
            assert info.value.errno == code
        assert not os.path.lexists(mnt / "bad")
