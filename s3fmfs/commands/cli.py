"""The ``s3fmfs`` command: mount a bucket, or run one of the client subcommands.

Forms::

    s3fmfs BUCKET[:/PREFIX] MOUNTPOINT [-o opt[,opt...]] [-f] [-d] [--log-level LEVEL]
    s3fmfs s3://BUCKET[/PREFIX] MOUNTPOINT ...   (the same mount)
    s3fmfs ls [BUCKET[/PREFIX]] [-r] [-o opt,...]
    s3fmfs presign BUCKET/KEY [--expires SECONDS] [--method GET|PUT|DELETE|HEAD] [-o opt,...]
    s3fmfs demo [MOUNTPOINT]          (s3fmfs.commands.demo)
    s3fmfs status MOUNTPOINT [--json] (s3fmfs.commands.status)
    s3fmfs -- ls MOUNTPOINT           (a bucket named like a subcommand)

Invariants:
- A subcommand is recognised only as the very first argument; anything else (``--`` first
  included) is the mount form.
- Every error of the mount form names the mount point (``s3fmfs: /mnt/b: unknown option 'x'``,
  :func:`s3fmfs.service.daemon.about`); missing arguments print the usage line first.
- A usage or configuration error (bad argument, unknown or malformed option, no credentials,
  a mountpoint missing or not empty) is one line on stderr and exit status 2; a failure to
  mount (FUSE unavailable, wrong secret, no such bucket, endpoint unreachable) one line and
  exit status 1. Never a traceback.
- Secrets never come from the command line (:mod:`s3fmfs.config.credentials`) and are never logged:
  only where they came from is.
- Everything that can be checked without a thread (options, credentials, mountpoint, cache
  directory, /dev/fuse) is checked before forking; the daemon's child checks the bucket and
  mounts (:mod:`s3fmfs.service.daemon`). ``-f`` does the same in this process.
- The mount form, run as the console script, first starts itself again (same pid and
  arguments) with ``PYTHONMALLOC=malloc`` unless ``PYTHONMALLOC`` is set: memory freed after a
  large listing can then be given back (``_use_system_malloc``).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys

from .. import __version__
from ..config import tls
from ..config.options import MountOptions, OptionError, parse_bucket
from ..service import daemon, mount
from ..service.logs import SYSLOG_SOCKET, fallback_log_file, setup_logging
from ..service.mount import MountConfig
from . import demo, ls, presign, status
from .checks import check_fuse, check_mountpoint, prepare_cache_dir
from .common import (
    CREDENTIALS_HELP,
    Parser,
    UsageError,
    add_common,
    credentials_for,
    fail,
    log_level,
    options_help,
    parse_command_options,
)

SUBCOMMANDS = ("ls", "presign", "demo", "status")

SUBCOMMANDS_HELP = """\
other commands (same -o options and credentials):
  s3fmfs ls [BUCKET[/PREFIX]] [-r]     list like `aws s3 ls`
  s3fmfs presign BUCKET/KEY [--expires SECONDS] [--method GET|PUT|DELETE|HEAD]
  s3fmfs demo [MOUNTPOINT]             mount a sample bucket served locally
  s3fmfs status MOUNTPOINT [--json]    uploads pending, requests, errors of a live mount
  s3fmfs -- ls MOUNTPOINT              mount a bucket named like a command"""


MOUNT_USAGE = "usage: s3fmfs BUCKET[:/PREFIX] MOUNTPOINT [-o OPT[,OPT...]] [-f] [-d]"


def mount_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="s3fmfs",
        usage="s3fmfs BUCKET[:/PREFIX] MOUNTPOINT [-o OPT[,OPT...]] [-f] [-d] "
        "[--log-level LEVEL]\n       s3fmfs {ls,presign,demo,status} ...",
        description="Mount an S3 bucket (or a prefix of it) as a directory. By default the "
        "command returns once the mount is live and keeps serving in the background.\n"
        "s3://BUCKET/PREFIX is the same as BUCKET:/PREFIX; s3:// alone mounts every bucket of "
        "the account, each a folder (-o bucket_mkdir: mkdir/rmdir create and delete buckets).",
        epilog=f"{options_help()}\n\n{CREDENTIALS_HELP}\n\n{SUBCOMMANDS_HELP}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("bucket", metavar="BUCKET[:/PREFIX]")
    parser.add_argument("mountpoint", metavar="MOUNTPOINT")
    add_common(parser)
    parser.add_argument("-f", dest="foreground", action="store_true", help="stay in foreground")
    parser.add_argument(
        "-d", dest="debug", action="store_true", help="log every request (like -o debug)"
    )
    parser.add_argument("--version", action="version", version=f"s3fmfs {__version__}")
    parser.usage_line = MOUNT_USAGE
    return parser


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, MountConfig]:
    """The mount configuration from the command line and environment (exit 2 if unusable)."""
    args = mount_parser().parse_args(argv)
    mountpoint = os.path.abspath(args.mountpoint)
    try:
        base = MountOptions(default_uid=os.getuid(), default_gid=os.getgid())
        options = parse_command_options(args.options, base)
        bucket, prefix = parse_bucket(args.bucket)
        if args.debug:
            options.debug = True
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
        creds = credentials_for(bucket, options)
    except (OptionError, UsageError) as exc:
        fail(daemon.about(mountpoint, str(exc)), 2)
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
        fail(daemon.about(config.mountpoint, problem), 1)
    level = log_level(args, config.options)
    if args.foreground:
        setup_logging(level, timestamps=True)
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
        log_hint = output = str(fallback_log_file(opts.cache_dir))
        try:
            os.makedirs(os.path.dirname(output), mode=0o700, exist_ok=True)
        except OSError as exc:
            fail(
                daemon.about(
                    config.mountpoint,
                    f"cannot create the log directory of {output}: {exc.strerror}",
                ),
                2,
            )

    def child(reporter: daemon.PipeReporter) -> int:
        where = setup_logging(level, daemon=True, log_file=opts.log_file, cache_dir=opts.cache_dir)
        logging.getLogger("s3fmfs").debug("logging to %s", where)
        return mount.run(config, reporter)

    return daemon.spawn(child, config.mountpoint, output=output, log_hint=log_hint)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``s3fmfs`` console script."""
    args = sys.argv[1:] if argv is None else list(argv)
    if args and args[0] in SUBCOMMANDS:
        command = {
            "ls": ls.main,
            "presign": presign.main,
            "demo": demo.main,
            "status": status.main,
        }[args[0]]
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
