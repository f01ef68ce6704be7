"""What the commands share: argument parsers that fail in one line, the options' help, and the
credentials and options of the client subcommands.

The endpoint and region not given with ``-o`` come from ``$AWS_ENDPOINT_URL_S3``,
``$AWS_ENDPOINT_URL`` and ``~/.aws/config`` (:func:`parse_command_options`), for the mount and
the subcommands alike: ``-o`` > environment > config file > the built-in default.

Invariants: a usage or configuration error is one line on stderr (``s3fmfs: ...``) and exit
status 2 (:func:`fail`); never a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from typing import NoReturn

from ..config.credentials import (
    Credentials,
    CredentialsError,
    find_credentials,
    find_service_settings,
)
from ..config.options import (
    DECLARED,
    OPTIONS,
    MountOptions,
    OptionError,
    parse_endpoint,
    parse_options,
)
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
    + "\nwithout -o endpoint= (region=): $AWS_ENDPOINT_URL_S3, $AWS_ENDPOINT_URL, then\n"
    "~/.aws/config's endpoint_url (region) of the same profile"
)


class UsageError(Exception):
    """One line for stderr, exit status 2."""


class Parser(argparse.ArgumentParser):
    #: Printed above an argument error when set (the mount form's usage line).
    usage_line: str | None = None

    def error(self, message: str) -> NoReturn:
        if self.usage_line:
            print(self.usage_line, file=sys.stderr)
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


def _fields_given(groups: list[str]) -> set[str]:
    """The ``MountOptions`` fields the ``-o`` groups set, by any name (s3fs's aliases such as
    ``url=`` included; s3fs's ``endpoint=REGION`` sets the region)."""
    fields = set()
    for group in groups:
        for item in group.split(","):
            name, _, value = item.strip().partition("=")
            spec = OPTIONS.get(name)
            if spec is None:
                continue
            if spec.field == "endpoint" and value and "://" not in value:
                fields.add("region")
            else:
                fields.add(spec.field)
    return fields


def parse_command_options(groups: list[str], base: MountOptions | None = None) -> MountOptions:
    """The ``-o`` groups over ``base``, with the endpoint and region they do not give taken from
    the environment or ``~/.aws/config`` (OptionError/UsageError if unusable)."""
    start = dataclasses.replace(base) if base is not None else MountOptions()
    given = _fields_given(groups)
    want_endpoint, want_region = "endpoint" not in given, "region" not in given
    if want_endpoint or want_region:
        profile = parse_options(groups, base).profile
        try:
            found = find_service_settings(profile=profile)
        except CredentialsError as exc:
            raise UsageError(str(exc)) from None
        if want_endpoint and found.endpoint:
            try:
                parse_endpoint(found.endpoint)
            except OptionError as exc:
                raise UsageError(f"{exc} (from {found.source})") from None
            start.endpoint = found.endpoint
        if want_region and found.region:
            start.region = found.region
    return parse_options(groups, start)


def client_setup(args: argparse.Namespace, bucket: str) -> tuple[MountOptions, Credentials]:
    try:
        options = parse_command_options(args.options)
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
