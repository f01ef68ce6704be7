"""What the commands share: argument parsers that fail in one line, the options' help, and the
credentials and options of the client subcommands.

Invariants: a usage or configuration error is one line on stderr (``s3fmfs: ...``) and exit
status 2 (:func:`fail`); never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import NoReturn

from ..config.credentials import Credentials, CredentialsError, find_credentials
from ..config.options import DECLARED, MountOptions, OptionError, parse_options
from ..config.s3fs_compat import S3FS_ONLY
from ..config.table import columns, help_text
from ..service.logs import LEVELS, setup_logging

CREDENTIALS_HELP = (
    "credentials, first found wins (secrets are never taken from the command line):\n"
    + (
        columns(
            [
                ("-o passwd_file=FILE", "s3fs format: ACCESS:SECRET or BUCKET:ACCESS:SECRET lines"),
                ("$S3FMFS_ACCESS_KEY_ID", "with $S3FMFS_SECRET_ACCESS_KEY ($S3FMFS_SESSION_TOKEN)"),
                ("$AWS_ACCESS_KEY_ID", "with $AWS_SECRET_ACCESS_KEY ($AWS_SESSION_TOKEN)"),
                ("~/.aws/credentials", "section -o profile=, else $AWS_PROFILE, else default"),
                ("~/.passwd-s3fmfs", "then /etc/passwd-s3fmfs: the passwd_file format, mode 0600"),
            ]
        )
    )
)


class UsageError(Exception):
    """One line for stderr, exit status 2."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        fail(message, 2)


def fail(message: str, status: int) -> NoReturn:
    print(f"s3fmfs: {message}", file=sys.stderr)
    sys.exit(status)


def options_help() -> str:
    """The ``mount options`` section of ``--help`` (from the option table, aligned)."""
    return help_text(DECLARED, S3FS_ONLY)


def add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", dest="options", action="append", default=[], metavar="OPT[,OPT...]")
    parser.add_argument(
        "--log-level",
        choices=sorted(LEVELS, key=LEVELS.__getitem__),
        type=str.lower,
        help="log level (default info; debug with -d)",
    )


def log_level(args: argparse.Namespace, options: MountOptions) -> int:
    if args.log_level:
        return LEVELS[args.log_level]
    if options.debug:
        return logging.DEBUG
    return options.dbglevel if options.dbglevel is not None else logging.INFO


def credentials_for(bucket: str, options: MountOptions) -> Credentials:
    if options.public_bucket:  # s3fs's public_bucket=1: unsigned requests, no key needed
        return Credentials("", "", None, "none: public_bucket, requests are unsigned")
    try:
        return find_credentials(bucket, passwd_file=options.passwd_file, profile=options.profile)
    except CredentialsError as exc:
        raise UsageError(str(exc)) from None


def client_setup(args: argparse.Namespace, bucket: str) -> tuple[MountOptions, Credentials]:
    try:
        options = parse_options(args.options)
        creds = credentials_for(bucket, options)
    except (OptionError, UsageError) as exc:
        fail(str(exc), 2)
    setup_logging(log_level(args, options))
    logging.getLogger("s3fmfs").debug("credentials: %s", creds.source)
    return options, creds


def split_path(spec: str) -> tuple[str, str]:
    spec = spec.removeprefix("s3://")
    bucket, _, key = spec.partition("/")
    return bucket, key
