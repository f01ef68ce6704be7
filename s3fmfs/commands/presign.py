"""``s3fmfs presign BUCKET/KEY``: print a presigned URL of an object."""

from __future__ import annotations

import argparse

from ..client import QueryStringAuthGenerator
from ..client.models import CallingFormat
from .common import (
    CREDENTIALS_HELP,
    Parser,
    add_common,
    client_setup,
    fail,
    options_help,
    split_path,
)


def main(argv: list[str]) -> int:
    """``s3fmfs presign BUCKET/KEY``: print a presigned URL."""
    parser = Parser(
        prog="s3fmfs presign",
        description="Print a presigned URL of an object.",
        epilog=options_help() + "\n\n" + CREDENTIALS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("target", metavar="BUCKET/KEY")
    parser.add_argument("--expires", type=int, default=3600, metavar="SECONDS")
    parser.add_argument(
        "--method", type=str.upper, choices=("GET", "PUT", "DELETE", "HEAD"), default="GET"
    )
    add_common(parser)
    args = parser.parse_args(argv)
    bucket, key = split_path(args.target)
    if not bucket or not key:
        fail(f"expected BUCKET/KEY, not {args.target!r}", 2)
    if args.expires <= 0:
        fail("--expires must be a positive number of seconds", 2)
    options, creds = client_setup(args, bucket)
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
        fail(str(exc), 2)
    print(url)
    return 0
