"""``s3fmfs demo [MOUNTPOINT]``: a sample bucket on a local S3 server, mounted in the foreground.

Invariants:
- The S3 server is moto's, started by :mod:`s3fmfs.commands.demo_server` (the tests' launcher
  too): a child in its own session on a free loopback port, its log in a temporary directory.
  A Ctrl-C in the terminal does not reach it: it outlives the mount, so unsaved files are
  uploaded before it is stopped (SIGTERM, then SIGKILL), whatever happens.
- The mountpoint (default ``./mnt``) is created when missing and removed again at the end; an
  existing one must be an empty directory. Usage problems are one line on stderr and exit 2.
- The mount is :func:`s3fmfs.service.mount.serve`, the ``s3fmfs`` command's own lifecycle, in this
  process. SIGINT/SIGTERM at any moment once :func:`main` runs stop everything cleanly: exit 0
  (1 if a file could not be uploaded before unmounting, or the server or the mount could not
  start), no traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shlex
import shutil
import signal
import stat
import struct
import sys
import tempfile
import time
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import NoReturn

import trio

from ..client import CallingFormat, S3fmAuthConnection, S3Object
from ..config.options import MountOptions
from ..fs.attrs import DIRECTORY_CONTENT_TYPE
from ..service.mount import MountConfig, serve
from .demo_server import LOOPBACK as HOST
from .demo_server import ServerStartError, moto, moto_available

BUCKET = "demo"
ACCESS_KEY_ID = "demo"
SECRET_ACCESS_KEY = "demo-secret"
REGION = "us-east-1"
DEFAULT_MOUNTPOINT = "mnt"
NEEDS_MOTO = "the demo needs moto: run make demo (or pip install 's3fmfs[demo]')"


log = logging.getLogger("s3fmfs.demo")


def _usage_error(message: str) -> NoReturn:
    print(f"s3fmfs demo: {message}", file=sys.stderr)
    sys.exit(2)


# -- the sample bucket --------------------------------------------------------------------------


def _png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """A small valid PNG of one colour."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    row = b"\x00" + bytes(rgb) * width
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(row * height))
        + chunk(b"IEND", b"")
    )


README_TEXT = """\
Hello! This is the s3fmfs demo.

This directory is the bucket "demo" of an S3 server running on your machine (moto's,
on 127.0.0.1). Every file here is an object of that bucket: listing this directory lists
the bucket, reading a file GETs its object, and a file you write is PUT when you close it.

Try: ls -l, cat, cp, mkdir, mv, rm, chmod, ln -s... The modes, owners and times you see are
kept in the objects' metadata, as s3fs-fuse keeps them (x-amz-meta-mode, -uid, -gid, -mtime).

Press Ctrl-C in the demo's terminal to unmount and stop the server (everything is lost:
the server keeps the bucket in memory).
"""

HELLO_SH = """\
#!/bin/sh
# An executable object: its mode (0755) is in x-amz-meta-mode.
echo "hello from an S3 object"
"""


@dataclass(frozen=True)
class SampleObject:
    key: str
    data: bytes
    mode: int  # with the type bits, as s3fs-fuse stores it
    content_type: str
    age_days: int = 0


def sample_objects() -> list[SampleObject]:
    """The demo bucket: files, folders (explicit and implicit), a symlink, odd names."""
    file, exe = stat.S_IFREG | 0o644, stat.S_IFREG | 0o755
    folder = stat.S_IFDIR | 0o755
    text = "text/plain; charset=utf-8"
    return [
        SampleObject("README.txt", README_TEXT.encode(), file, text),
        SampleObject("hello.sh", HELLO_SH.encode(), exe, "text/x-shellscript", 3),
        SampleObject("photos/", b"", folder, DIRECTORY_CONTENT_TYPE, 30),
        SampleObject("photos/red.png", _png(16, 16, (220, 40, 40)), file, "image/png", 30),
        SampleObject("photos/blue.png", _png(32, 24, (40, 80, 220)), file, "image/png", 12),
        SampleObject(
            "latest.png", b"photos/blue.png", stat.S_IFLNK | 0o777, "application/octet-stream"
        ),
        # docs/ and docs/guide/ have no marker: implicit directories, from the keys alone.
        SampleObject(
            "docs/notes.txt", b"Folders in S3 are just key prefixes: docs/notes.txt\n", file, text
        ),
        SampleObject(
            "docs/guide/getting-started.md",
            b"# Getting started\n\nmkdir, write, rename: it all becomes S3 requests.\n",
            file,
            "text/markdown",
            7,
        ),
        SampleObject(
            "docs/guide/private.txt", b"only the owner may read this\n", stat.S_IFREG | 0o600, text
        ),
        SampleObject(
            "Café menu – été 2024.txt",
            "Spaces and unicode in names are fine: crêpes, thé, café.\n".encode(),
            file,
            text,
            90,
        ),
        SampleObject("inbox/", b"", stat.S_IFDIR | 0o775, DIRECTORY_CONTENT_TYPE),
    ]


def _connection(endpoint: str) -> S3fmAuthConnection:
    port = int(endpoint.rsplit(":", 1)[1])
    return S3fmAuthConnection(
        ACCESS_KEY_ID,
        SECRET_ACCESS_KEY,
        False,
        HOST,
        port,
        CallingFormat.PATH,
        signature="v4",
        region=REGION,
    )


async def seed(endpoint: str) -> None:
    """Create the bucket ``demo`` with :func:`sample_objects`, owned by the current user."""
    now = int(time.time())
    async with _connection(endpoint) as conn:
        await conn.create_bucket(BUCKET)
        for obj in sample_objects():
            metadata = {
                "mode": str(obj.mode),
                "uid": str(os.getuid()),
                "gid": str(os.getgid()),
                "mtime": str(now - obj.age_days * 86400),
            }
            await conn.put(
                BUCKET, obj.key, S3Object(obj.data, metadata), {"Content-Type": obj.content_type}
            )


# -- the mount ----------------------------------------------------------------------------------


def _mounted(path: str) -> bool:
    """Whether ``path`` (absolute) is a mount point, from mountinfo: never touches the mount,
    which this very process serves."""
    target = path.encode()
    for char, code in ((b"\\", b"\\134"), (b" ", b"\\040"), (b"\t", b"\\011"), (b"\n", b"\\012")):
        target = target.replace(char, code)
    with open("/proc/self/mountinfo", "rb") as f:
        return any(len(fields := line.split()) > 4 and fields[4] == target for line in f)


def _s3fmfs_command() -> str:
    """How the user can run this ``s3fmfs``: its name when on PATH, else its path."""
    script = Path(sys.executable).parent / "s3fmfs"
    found = shutil.which("s3fmfs")
    if found is not None and Path(found).resolve() == script.resolve():
        return "s3fmfs"
    with contextlib.suppress(ValueError):
        return shlex.quote(str(script.absolute().relative_to(Path.cwd())))
    return shlex.quote(str(script))


def instructions(shown: str, endpoint: str) -> str:
    """What to try, ``shown`` being the mountpoint as the user named it."""
    mnt = shlex.quote(shown)
    s3fmfs = _s3fmfs_command()
    opt = f"-o endpoint={endpoint}"
    sig = f"--aws-sigv4 aws:amz:{REGION}:s3 --user {ACCESS_KEY_ID}:{SECRET_ACCESS_KEY}"
    return f"""
The bucket "{BUCKET}" is mounted on {shown}. In another terminal, try:

  ls -l {mnt} {mnt}/photos {mnt}/docs/guide
  cat {mnt}/README.txt
  {mnt}/hello.sh
  readlink {mnt}/latest.png
  cp {mnt}/photos/red.png /tmp/ && cmp /tmp/red.png {mnt}/photos/red.png
  echo hi > {mnt}/new.txt && mkdir {mnt}/inbox/2024 && mv {mnt}/new.txt {mnt}/inbox/2024/

Then look at the bucket through S3 itself:

  export AWS_ACCESS_KEY_ID={ACCESS_KEY_ID} AWS_SECRET_ACCESS_KEY={SECRET_ACCESS_KEY}
  {s3fmfs} ls {BUCKET} -r {opt}
  curl "$({s3fmfs} presign {BUCKET}/inbox/2024/new.txt {opt})"
  curl {sig} {endpoint}/{BUCKET}/README.txt
  {s3fmfs} {BUCKET}:/docs /some/empty/dir {opt} -f     # a second mount, of a prefix

Any S3 tool works: endpoint {endpoint} (path style), region {REGION},
access key {ACCESS_KEY_ID}, secret key {SECRET_ACCESS_KEY}; the data lives in memory only.

Press Ctrl-C here to unmount and stop the server.
"""


async def _announce(mountpoint: str, shown: str, endpoint: str) -> None:
    """Print :func:`instructions` once the mount is live (answers ``stat``)."""
    while not _mounted(mountpoint):  # mountinfo first: a stat before the mount would not wait
        await trio.sleep(0.05)
    while not await trio.to_thread.run_sync(os.path.ismount, mountpoint):
        await trio.sleep(0.05)
    print(instructions(shown, endpoint), flush=True)


async def _cancel_on_signal(scope: trio.CancelScope, signals: AsyncIterator[int]) -> None:
    """A signal met outside the mount's own handling (seeding, mounting, unmounting)."""
    async for signum in signals:
        log.info("%s: stopping", signal.Signals(signum).name)
        scope.cancel()


async def demo(endpoint: str, mountpoint: str, shown: str) -> int:
    """Seed the bucket, mount it on ``mountpoint`` and serve until unmounted or signalled."""
    status = 0
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_cancel_on_signal, nursery.cancel_scope, signals)
            await seed(endpoint)
            nursery.start_soon(_announce, mountpoint, shown, endpoint)
            options = MountOptions(
                endpoint=endpoint,
                region=REGION,
                signature="v4",
                path_style=True,
                default_uid=os.getuid(),
                default_gid=os.getgid(),
            )
            config = MountConfig(
                bucket=BUCKET,
                prefix="",
                mountpoint=mountpoint,
                options=options,
                access_key_id=ACCESS_KEY_ID,
                secret_access_key=SECRET_ACCESS_KEY,
            )
            status = await serve(config)
            nursery.cancel_scope.cancel()
    return status


# -- the command --------------------------------------------------------------------------------


def _prepare_mountpoint(shown: str) -> tuple[str, bool]:
    """The absolute mountpoint, and whether it was created here; exit 2 if unusable."""
    path = os.path.abspath(shown)
    if not os.path.lexists(path):
        try:
            os.makedirs(path)
        except OSError as exc:
            _usage_error(f"cannot create mountpoint {shown!r}: {exc.strerror}")
        return path, True
    try:
        entries = os.listdir(path)
    except NotADirectoryError:
        _usage_error(f"mountpoint {shown!r} is not a directory")
    except OSError as exc:
        _usage_error(
            f"mountpoint {shown!r} is unusable ({exc.strerror}); "
            f"if a mount is left there: fusermount3 -u {shlex.quote(shown)}"
        )
    if entries:
        _usage_error(f"mountpoint {shown!r} is not empty")
    if _mounted(path):
        _usage_error(f"{shown!r} is already a mount point")
    return path, False


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="s3fmfs demo",
        description="Start a local S3 server (moto's) with a sample bucket and mount it, "
        "in the foreground; Ctrl-C unmounts and stops the server.",
    )
    parser.add_argument(
        "mountpoint",
        nargs="?",
        default=DEFAULT_MOUNTPOINT,
        metavar="MOUNTPOINT",
        help=f"an empty or missing directory (default ./{DEFAULT_MOUNTPOINT})",
    )
    return parser


def main(argv: list[str]) -> int:
    """``s3fmfs demo [MOUNTPOINT]``; the exit status."""
    args = _parser().parse_args(argv)
    if not moto_available():
        print(NEEDS_MOTO, file=sys.stderr)
        return 2
    # SIGTERM as SIGINT outside trio (trio handles both itself while the demo runs).
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    mountpoint, created = os.path.abspath(args.mountpoint), False
    status = 0
    try:
        mountpoint, created = _prepare_mountpoint(args.mountpoint)
        logging.basicConfig(
            level=logging.INFO, format="s3fmfs: %(levelname)s %(name)s: %(message)s"
        )
        logging.getLogger("httpx").setLevel(logging.WARNING)
        logging.getLogger("httpcore").setLevel(logging.WARNING)
        with tempfile.TemporaryDirectory(prefix="s3fmfs-demo-") as workdir:
            print("starting the S3 server…", flush=True)
            with moto(Path(workdir) / "moto.log") as port:
                endpoint = f"http://{HOST}:{port}"
                log.info("S3 server at %s", endpoint)
                status = trio.run(demo, endpoint, mountpoint, args.mountpoint)
            log.info("S3 server stopped")
    except KeyboardInterrupt:
        pass
    except ServerStartError as exc:
        print(f"s3fmfs demo: the S3 server did not start: {exc}", file=sys.stderr)
        status = 1
    except Exception as exc:  # the bucket could not be seeded, ...: one line
        error: BaseException = exc
        while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
            error = error.exceptions[0]  # trio's nurseries wrap what they raise
        print(f"s3fmfs demo: {type(error).__name__}: {error}", file=sys.stderr)
        status = 1
    finally:
        signal.signal(signal.SIGTERM, previous)
        if created and not _mounted(mountpoint):
            with contextlib.suppress(OSError):
                os.rmdir(mountpoint)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
