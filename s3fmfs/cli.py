"""The ``s3fmfs`` command: ``s3fmfs BUCKET[:/PREFIX] MOUNTPOINT [-o opts] [-f] [-d]``.

Invariants:
- A usage error (bad argument, unknown or malformed option, missing credentials or
  mountpoint) is one line on stderr and exit status 2, never a traceback.
- Credentials come from ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` (and
  ``AWS_SESSION_TOKEN`` when set), never from the command line.
- The mount runs in the foreground with or without ``-f`` for now (daemonizing is to come).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import NoReturn

from . import __version__
from .fs.options import OPTIONS, MountOptions, OptionError, parse_bucket, parse_options
from .mount import MountConfig, run


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        _usage_error(message)


def _usage_error(message: str) -> NoReturn:
    print(f"s3fmfs: {message}", file=sys.stderr)
    sys.exit(2)


def _parser() -> argparse.ArgumentParser:
    epilog = "mount options (-o name[=value],...):\n" + "\n".join(
        f"  {name:<14}{help_text}" for name, help_text in OPTIONS.items()
    )
    parser = _Parser(
        prog="s3fmfs",
        description="Mount an S3 bucket (or a prefix of it) as a directory.",
        epilog=epilog
        + "\n\ncredentials: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (AWS_SESSION_TOKEN)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("bucket", metavar="BUCKET[:/PREFIX]")
    parser.add_argument("mountpoint", metavar="MOUNTPOINT")
    parser.add_argument("-o", dest="options", action="append", default=[], metavar="OPTS")
    parser.add_argument("-f", dest="foreground", action="store_true", help="stay in foreground")
    parser.add_argument("-d", dest="debug", action="store_true", help="debug logging (implies -f)")
    parser.add_argument("--version", action="version", version=f"s3fmfs {__version__}")
    return parser


def parse_args(argv: list[str]) -> MountConfig:
    """The mount configuration from the command line and environment (exit 2 if unusable)."""
    args = _parser().parse_args(argv)
    try:
        base = MountOptions(uid=os.getuid(), gid=os.getgid())
        options = parse_options(args.options, base)
        bucket, prefix = parse_bucket(args.bucket)
    except OptionError as exc:
        _usage_error(str(exc))
    if args.debug:
        options.debug = True
    access = os.environ.get("AWS_ACCESS_KEY_ID", "")
    secret = os.environ.get("AWS_SECRET_ACCESS_KEY", "")
    if not access or not secret:
        _usage_error("set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
    if not os.path.isdir(args.mountpoint):
        _usage_error(f"mountpoint {args.mountpoint!r} is not a directory")
    return MountConfig(
        bucket=bucket,
        prefix=prefix,
        mountpoint=os.path.abspath(args.mountpoint),
        options=options,
        access_key_id=access,
        secret_access_key=secret,
        session_token=os.environ.get("AWS_SESSION_TOKEN") or None,
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``s3fmfs`` console script."""
    config = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(
        level=logging.DEBUG if config.options.debug else logging.INFO,
        format="s3fmfs: %(levelname)s %(name)s: %(message)s",
    )
    if not config.options.debug:
        logging.getLogger("httpx").setLevel(logging.WARNING)
        logging.getLogger("httpcore").setLevel(logging.WARNING)
    try:
        return run(config)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
