"""The ``s3fmfs`` command: mount a bucket, or run one of the client subcommands.

Forms::

    s3fmfs BUCKET[:/PREFIX] MOUNTPOINT [-o opt[,opt...]] [-f] [-d] [--log-level LEVEL]
    s3fmfs ls [BUCKET[/PREFIX]] [-r] [-o opt,...]
    s3fmfs presign BUCKET/KEY [--expires SECONDS] [--method GET|PUT|DELETE|HEAD] [-o opt,...]
    s3fmfs demo [MOUNTPOINT]          (s3fmfs.demo, when installed)
    s3fmfs -- ls MOUNTPOINT           (a bucket named like a subcommand)

Invariants:
- A subcommand is recognised only as the very first argument; anything else (``--`` first
  included) is the mount form.
- A usage or configuration error (bad argument, unknown or malformed option, no credentials,
  a mountpoint missing or not empty) is one line on stderr and exit status 2; a failure to
  mount (FUSE unavailable, wrong secret, no such bucket, endpoint unreachable) one line and
  exit status 1. Never a traceback.
- Secrets never come from the command line (:mod:`s3fmfs.credentials`) and are never logged:
  only where they came from is.
- Everything that can be checked without a thread (options, credentials, mountpoint, cache
  directory, /dev/fuse) is checked before forking; the daemon's child checks the bucket and
  mounts (:mod:`s3fmfs.daemon`). ``-f`` does the same in this process.
- The mount form, run as the console script, first starts itself again (same pid and
  arguments) with ``PYTHONMALLOC=malloc`` unless ``PYTHONMALLOC`` is set: memory freed after a
  large listing can then be given back (``_use_system_malloc``).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import errno
import importlib
import logging
import os
import re
import shutil
import stat
import sys
from typing import NoReturn

from . import __version__, tls
from .credentials import Credentials, CredentialsError, find_credentials
from .fs.options import (
    IGNORED_HELP,
    OPTIONS,
    MountOptions,
    OptionError,
    parse_bucket,
    parse_options,
)
from .logs import LEVELS, SYSLOG_SOCKET, default_log_dir, setup_logging
from .mount import MountConfig

SUBCOMMANDS = ("ls", "presign", "demo")
FUSE_DEVICE = "/dev/fuse"

CREDENTIALS_HELP = """\
credentials, first found wins (secrets are never taken from the command line):
  -o passwd_file=FILE                  s3fs format: ACCESS:SECRET or BUCKET:ACCESS:SECRET lines
  S3FMFS_ACCESS_KEY_ID, S3FMFS_SECRET_ACCESS_KEY (S3FMFS_SESSION_TOKEN)
  AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (AWS_SESSION_TOKEN)
  ~/.aws/credentials                   section -o profile=, else $AWS_PROFILE, else default
  ~/.passwd-s3fmfs, /etc/passwd-s3fmfs same format as passwd_file; must be mode 0600"""

SUBCOMMANDS_HELP = """\
other commands (same -o options and credentials):
  s3fmfs ls [BUCKET[/PREFIX]] [-r]     list like `aws s3 ls`
  s3fmfs presign BUCKET/KEY [--expires SECONDS] [--method GET|PUT|DELETE|HEAD]
  s3fmfs demo [MOUNTPOINT]             mount a sample bucket served locally
  s3fmfs -- ls MOUNTPOINT              mount a bucket named like a command"""


class UsageError(Exception):
    """One line for stderr, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        _fail(message, 2)


def _fail(message: str, status: int) -> NoReturn:
    print(f"s3fmfs: {message}", file=sys.stderr)
    sys.exit(status)


def _options_help() -> str:
    lines = [f"  {name:<14}{help_text}" for name, help_text in OPTIONS.items()]
    lines.append(f"  {'(ignored)':<14}{IGNORED_HELP}")
    return "mount options (-o name[=value],...):\n" + "\n".join(lines)


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", dest="options", action="append", default=[], metavar="OPT[,OPT...]")
    parser.add_argument(
        "--log-level",
        choices=sorted(LEVELS, key=LEVELS.__getitem__),
        type=str.lower,
        help="log level (default info; debug with -d)",
    )


def mount_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="s3fmfs",
        usage="s3fmfs BUCKET[:/PREFIX] MOUNTPOINT [-o OPT[,OPT...]] [-f] [-d] "
        "[--log-level LEVEL]\n       s3fmfs {ls,presign,demo} ...",
        description="Mount an S3 bucket (or a prefix of it) as a directory. By default the "
        "command returns once the mount is live and keeps serving in the background.",
        epilog=f"{_options_help()}\n\n{CREDENTIALS_HELP}\n\n{SUBCOMMANDS_HELP}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("bucket", metavar="BUCKET[:/PREFIX]")
    parser.add_argument("mountpoint", metavar="MOUNTPOINT")
    _add_common(parser)
    parser.add_argument("-f", dest="foreground", action="store_true", help="stay in foreground")
    parser.add_argument(
        "-d", dest="debug", action="store_true", help="log every request (like -o debug)"
    )
    parser.add_argument("--version", action="version", version=f"s3fmfs {__version__}")
    return parser


def _log_level(args: argparse.Namespace, options: MountOptions) -> int:
    if args.log_level:
        return LEVELS[args.log_level]
    return logging.DEBUG if options.debug else logging.INFO


def _credentials(bucket: str, options: MountOptions) -> Credentials:
    try:
        return find_credentials(bucket, passwd_file=options.passwd_file, profile=options.profile)
    except CredentialsError as exc:
        raise UsageError(str(exc)) from None


# -- the mount --------------------------------------------------------------------------------


def _unescape_mountinfo(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash as ``\\ooo``."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def mounted_fstype(path: str) -> str | None:
    """The type of the topmost mount at ``path`` (from /proc/self/mountinfo), or None."""
    found = None
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
            for line in f:
                fields = line.split()
                if len(fields) > 4 and _unescape_mountinfo(fields[4]) == path and " - " in line:
                    found = line.split(" - ", 1)[1].split()[0]
    except OSError:
        return None
    return found


def check_mountpoint(path: str, nonempty: bool) -> None:
    """UsageError unless ``path`` is a directory we can mount on (empty unless ``nonempty``).

    An autofs mount there (systemd's ``x-systemd.automount``) is waiting for this very mount:
    it is not looked into (that would block until we are done), only mounted over. Another
    s3fmfs mount there is refused; any other mount (a bind-mounted volume) is checked as a
    directory.
    """
    fstype = mounted_fstype(path)
    if fstype == "autofs":
        return
    if fstype is not None and fstype.startswith("fuse.s3fmfs"):
        raise UsageError(f"{path} is already an s3fmfs mount (fusermount3 -u {path})")
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise UsageError(f"mountpoint {path} does not exist") from None
    except OSError as exc:
        hint = f" (a stale mount? fusermount3 -u {path})" if exc.errno == errno.ENOTCONN else ""
        raise UsageError(f"mountpoint {path}: {exc.strerror}{hint}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise UsageError(f"mountpoint {path} is not a directory")
    if not nonempty:
        try:
            entries = os.listdir(path)
        except OSError as exc:
            raise UsageError(f"mountpoint {path}: {exc.strerror}") from None
        if entries:
            raise UsageError(
                f"mountpoint {path} is not empty (-o nonempty mounts over its content)"
            )


def check_fuse() -> str | None:
    """Why FUSE cannot be used here (one line), or None."""
    device = FUSE_DEVICE
    try:
        st = os.stat(device)
    except OSError:
        return (
            f"FUSE unavailable: {device} does not exist "
            "(modprobe fuse; in a container, pass the device in)"
        )
    if not stat.S_ISCHR(st.st_mode):
        return f"FUSE unavailable: {device} is not a character device"
    try:
        os.close(os.open(device, os.O_RDWR | os.O_CLOEXEC))
    except OSError as exc:
        return f"FUSE unavailable: cannot open {device}: {exc.strerror}"
    if os.geteuid() != 0 and shutil.which("fusermount3") is None:
        return "FUSE unavailable: fusermount3 not found (apt install fuse3)"
    return None


def prepare_cache_dir(path: str) -> None:
    """Create ``cache_dir`` (mode 0700) or check it is a writable directory."""
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cache_dir {path}: {exc.strerror}") from None
    if not os.path.isdir(path) or not os.access(path, os.W_OK | os.X_OK):
        raise UsageError(f"cache_dir {path} is not a writable directory")


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, MountConfig]:
    """The mount configuration from the command line and environment (exit 2 if unusable)."""
    args = mount_parser().parse_args(argv)
    try:
        base = MountOptions(uid=os.getuid(), gid=os.getgid())
        options = parse_options(args.options, base)
        bucket, prefix = parse_bucket(args.bucket)
        if args.debug:
            options.debug = True
        mountpoint = os.path.abspath(args.mountpoint)
        check_mountpoint(mountpoint, options.nonempty)
        if options.cache_dir:
            options.cache_dir = os.path.abspath(options.cache_dir)
            prepare_cache_dir(options.cache_dir)
        if options.log_file:
            options.log_file = os.path.abspath(options.log_file)
            if not os.path.isdir(os.path.dirname(options.log_file)):
                raise UsageError(f"log_file {options.log_file}: no such directory")
        if options.passwd_file:
            options.passwd_file = os.path.abspath(options.passwd_file)
        if options.ca_bundle:
            options.ca_bundle = os.path.abspath(options.ca_bundle)
            if problem := tls.check_ca_bundle(options.ca_bundle):
                raise UsageError(problem)
        creds = _credentials(bucket, options)
    except (OptionError, UsageError) as exc:
        _fail(str(exc), 2)
    config = MountConfig(
        bucket=bucket,
        prefix=prefix,
        mountpoint=mountpoint,
        options=options,
        access_key_id=creds.access_key_id,
        secret_access_key=creds.secret_access_key,
        session_token=creds.session_token,
        credentials_source=creds.source,
    )
    return args, config


def mount_main(argv: list[str]) -> int:
    """``s3fmfs BUCKET MOUNTPOINT ...``: mount, in the background unless ``-f``."""
    args, config = parse_args(argv)
    problem = check_fuse()
    if problem:
        _fail(problem, 1)
    level = _log_level(args, config.options)
    from . import daemon, mount

    if args.foreground:
        setup_logging(level)
        try:
            return mount.run(config)
        except KeyboardInterrupt:
            return 130
    opts = config.options
    output: str | None = None  # the daemon's stdout/stderr (libfuse writes there)
    if opts.log_file:
        log_hint = output = opts.log_file
    elif os.path.exists(SYSLOG_SOCKET):
        log_hint = "syslog (journalctl -t s3fmfs)"
    else:
        log_hint = output = str(default_log_dir(opts.cache_dir) / "s3fmfs.log")
        try:
            os.makedirs(os.path.dirname(output), mode=0o700, exist_ok=True)
        except OSError as exc:
            _fail(f"cannot create the log directory of {output}: {exc.strerror}", 2)

    def child(reporter: daemon.PipeReporter) -> int:
        where = setup_logging(level, daemon=True, log_file=opts.log_file, cache_dir=opts.cache_dir)
        logging.getLogger("s3fmfs").debug("logging to %s", where)
        return mount.run(config, reporter)

    return daemon.spawn(child, config.mountpoint, output=output, log_hint=log_hint)


# -- client subcommands -----------------------------------------------------------------------


def _client_setup(args: argparse.Namespace, bucket: str) -> tuple[MountOptions, Credentials]:
    try:
        options = parse_options(args.options)
        creds = _credentials(bucket, options)
    except (OptionError, UsageError) as exc:
        _fail(str(exc), 2)
    setup_logging(_log_level(args, options))
    logging.getLogger("s3fmfs").debug("credentials: %s", creds.source)
    return options, creds


def _split_path(spec: str) -> tuple[str, str]:
    spec = spec.removeprefix("s3://")
    bucket, _, key = spec.partition("/")
    return bucket, key


def presign_main(argv: list[str]) -> int:
    """``s3fmfs presign BUCKET/KEY``: print a presigned URL."""
    from .client import QueryStringAuthGenerator
    from .client.models import CallingFormat

    parser = _Parser(
        prog="s3fmfs presign",
        description="Print a presigned URL of an object.",
        epilog=_options_help() + "\n\n" + CREDENTIALS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("target", metavar="BUCKET/KEY")
    parser.add_argument("--expires", type=int, default=3600, metavar="SECONDS")
    parser.add_argument(
        "--method", type=str.upper, choices=("GET", "PUT", "DELETE", "HEAD"), default="GET"
    )
    _add_common(parser)
    args = parser.parse_args(argv)
    bucket, key = _split_path(args.target)
    if not bucket or not key:
        _fail(f"expected BUCKET/KEY, not {args.target!r}", 2)
    if args.expires <= 0:
        _fail("--expires must be a positive number of seconds", 2)
    options, creds = _client_setup(args, bucket)
    secure, host, port = options.endpoint_parts
    calling = CallingFormat.PATH if options.use_path_style else CallingFormat.SUBDOMAIN
    gen = QueryStringAuthGenerator(
        creds.access_key_id,
        creds.secret_access_key,
        secure,
        host,
        port,
        calling,
        signature=options.signature,
        region=options.region,
        session_token=creds.session_token,
    )
    gen.set_expires_in(args.expires)
    try:
        url = gen.generate_url(args.method, bucket, key)
    except ValueError as exc:
        _fail(str(exc), 2)
    print(url)
    return 0


def _local_time(stamp: str) -> str:
    try:
        when = datetime.datetime.fromisoformat(stamp)
    except ValueError:
        return f"{stamp[:19]:<19}"
    return when.astimezone().strftime("%Y-%m-%d %H:%M:%S")


async def _ls(
    options: MountOptions, creds: Credentials, bucket: str, prefix: str, recursive: bool
) -> int:
    from .mount import connection_for

    conn = connection_for(
        options, creds.access_key_id, creds.secret_access_key, creds.session_token
    )
    async with conn:
        if not bucket:
            listing = await conn.list_all_my_buckets()
            for b in listing.entries:
                print(f"{_local_time(b.creation_date)} {b.name}")
            return 0
        base = prefix[: prefix.rfind("/") + 1]
        delimiter = None if recursive else "/"
        async for page in conn.list_pages(bucket, prefix, delimiter):
            for folder in page.common_prefixes:
                print(f"{'PRE':>30} {folder.prefix[len(base) :]}")
            for entry in page.entries:
                name = entry.key if recursive else entry.key[len(base) :]
                print(f"{_local_time(entry.last_modified)} {entry.size:>10} {name}")
    return 0


def ls_main(argv: list[str]) -> int:
    """``s3fmfs ls [BUCKET[/PREFIX]]``: list like ``aws s3 ls``."""
    import trio

    from .client import S3fmError
    from .mount import describe_failure

    parser = _Parser(
        prog="s3fmfs ls",
        description="List the buckets, or a bucket's keys one level deep like `aws s3 ls` "
        "(folders as PRE name/); -r lists every key.",
        epilog=_options_help() + "\n\n" + CREDENTIALS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("target", metavar="BUCKET[/PREFIX]", nargs="?", default="")
    parser.add_argument("-r", "--recursive", action="store_true")
    _add_common(parser)
    args = parser.parse_args(argv)
    bucket, prefix = _split_path(args.target)
    options, creds = _client_setup(args, bucket)
    try:
        return trio.run(_ls, options, creds, bucket, prefix, args.recursive)
    except BrokenPipeError:  # pragma: no cover - `s3fmfs ls | head`
        return 0
    except (S3fmError, OSError) as exc:
        _fail(describe_failure(exc, bucket, options.endpoint, creds.access_key_id), 1)


def demo_main(argv: list[str]) -> int:
    """``s3fmfs demo``: the demo module's ``main``, when it is there."""
    try:
        module = importlib.import_module("s3fmfs.demo")
    except ModuleNotFoundError as exc:
        if exc.name != "s3fmfs.demo":
            raise
        _fail("demo not available", 2)
    result = module.main(argv)
    return int(result or 0)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``s3fmfs`` console script."""
    args = sys.argv[1:] if argv is None else list(argv)
    if args and args[0] in SUBCOMMANDS:
        command = {"ls": ls_main, "presign": presign_main, "demo": demo_main}[args[0]]
        return command(args[1:])
    if argv is None:
        _use_system_malloc()
    return mount_main(args)


def _use_system_malloc() -> None:
    """Run the mount with Python's objects in the C heap (``PYTHONMALLOC=malloc``): the core's
    housekeeping can then give the memory of a large listing back (``malloc_trim``), where
    Python's own allocator keeps every 1 MiB arena that still holds one live object (measured:
    20,000 entries listed leave 15 MiB more with it, 5 MiB with malloc). The process is started
    again, same pid and arguments, before anything is checked; a ``PYTHONMALLOC`` set by the
    user is obeyed."""
    if "PYTHONMALLOC" in os.environ or not sys.orig_argv:
        return
    env = {**os.environ, "PYTHONMALLOC": "malloc"}
    with contextlib.suppress(OSError):  # if it fails, run on with Python's allocator
        os.execve(sys.executable, sys.orig_argv, env)


if __name__ == "__main__":
    sys.exit(main())
