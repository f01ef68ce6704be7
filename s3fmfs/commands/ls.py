"""``s3fmfs ls [BUCKET[/PREFIX]] [-r]``: list the buckets, or keys, like ``aws s3 ls``."""

from __future__ import annotations

import argparse
import datetime

import trio

from ..client import S3fmError
from ..config.credentials import Credentials
from ..config.options import MountOptions
from ..service.connection import connection_for, describe_failure
from .common import (
    CREDENTIALS_HELP,
    Parser,
    add_common,
    client_setup,
    fail,
    options_help,
    split_path,
)


def _local_time(stamp: str | datetime.datetime | None) -> str:
    if stamp is None:
        return " " * 19
    if isinstance(stamp, datetime.datetime):
        when = stamp
    else:
        try:
            when = datetime.datetime.fromisoformat(stamp)
        except ValueError:
            return f"{stamp[:19]:<19}"
    return when.astimezone().strftime("%Y-%m-%d %H:%M:%S")


async def _ls(
    options: MountOptions, creds: Credentials, bucket: str, prefix: str, recursive: bool
) -> int:
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


def main(argv: list[str]) -> int:
    """``s3fmfs ls [BUCKET[/PREFIX]]``: list like ``aws s3 ls``."""
    parser = Parser(
        prog="s3fmfs ls",
        description="List the buckets, or a bucket's keys one level deep like `aws s3 ls` "
        "(folders as PRE name/); -r lists every key.",
        epilog=options_help() + "\n\n" + CREDENTIALS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("target", metavar="BUCKET[/PREFIX]", nargs="?", default="")
    parser.add_argument("-r", "--recursive", action="store_true")
    add_common(parser)
    args = parser.parse_args(argv)
    bucket, prefix = split_path(args.target)
    options, creds = client_setup(args, bucket)
    try:
        return trio.run(_ls, options, creds, bucket, prefix, args.recursive)
    except BrokenPipeError:  # pragma: no cover - `s3fmfs ls | head`
        return 0
    except (S3fmError, OSError) as exc:
        fail(describe_failure(exc, bucket, options.endpoint, creds.access_key_id), 1)
