"""``s3fmfs status MOUNTPOINT [--json]``: what a live mount is doing, from its status socket.

Invariants:
- Asks the mount's socket (:func:`s3fmfs.service.status.socket_path`, same user: the socket is
  in a directory only its owner can enter) and prints its answer for people, or as it came
  with ``--json``. Sends nothing to the bucket, needs no credentials.
- No mount answering (not an s3fmfs mount, another user's, an older version without the
  socket) is one line on stderr and exit status 1; a usage error exit status 2.
"""

from __future__ import annotations

import datetime
import json
import os
from typing import Any

from ..service.status import ask, human_bytes, progress_line, socket_path
from .common import Parser, fail


def _rate(hits: int, misses: int) -> str:
    asked = hits + misses
    if not asked:
        return "not used"
    return f"{hits * 100 // asked}% of {asked:,} ({hits:,} hits)"


def render(answer: dict[str, Any]) -> str:
    """The status for people: a few aligned lines per section."""
    lines: list[str] = []
    source = answer.get("bucket", "?") + (f":/{answer['prefix']}" if answer.get("prefix") else "")
    source = source or "s3:// (every bucket)"
    started = datetime.datetime.fromtimestamp(float(answer.get("started", 0))).astimezone()
    lines.append(f"{answer.get('mountpoint', '?')}: {source} (pid {answer.get('pid', '?')})")
    lines.append(
        f"  up since {started:%Y-%m-%d %H:%M:%S} ({float(answer.get('uptime', 0)):,.0f}s), "
        f"s3fmfs {answer.get('version', '?')}"
    )
    lines.append(f"  log: {answer.get('log', '?')}")
    uploads = answer.get("uploads", {})
    files = int(uploads.get("files", 0))
    if files:
        total, done = int(uploads.get("bytes_total", 0)), int(uploads.get("bytes_done", 0))
        lines.append(f"pending uploads: {progress_line(files, total, done)}")
        pending = uploads.get("pending", [])
        for item in pending:
            size, sent = int(item.get("size", 0)), int(item.get("sent", 0))
            percent = 100 if size == 0 else min(100, sent * 100 // size)
            lines.append(f"  {item.get('path', '?')}: {human_bytes(size)}, {percent}% sent")
        if files > len(pending):
            lines.append(f"  … and {files - len(pending):,} more")
    else:
        lines.append("pending uploads: none")
    requests = answer.get("requests", {})
    lines.append(
        f"requests since mount: {int(requests.get('total', 0)):,}, "
        f"retries: {int(requests.get('retries', 0)):,}"
    )
    for kind, count in requests.get("by_kind", {}).items():
        lines.append(f"  {kind:<22} {int(count):>10,}")
    errors = requests.get("errors", {})
    if errors:
        lines.append("errors: " + ", ".join(f"{k} × {int(v):,}" for k, v in errors.items()))
    else:
        lines.append("errors: none")
    lines.append("caches:")
    for name, counts in answer.get("caches", {}).items():
        rate = _rate(int(counts.get("hits", 0)), int(counts.get("misses", 0)))
        lines.append(f"  {name:<22} {rate}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    """``s3fmfs status MOUNTPOINT [--json]``."""
    parser = Parser(
        prog="s3fmfs status",
        description="Show what a live mount of yours is doing: uploads still to finish (with "
        "progress), requests sent by kind, errors and retries since it was mounted, cache "
        "hit rates. Asks the mount's status socket; sends nothing to the bucket.",
    )
    parser.add_argument("mountpoint", metavar="MOUNTPOINT")
    parser.add_argument("--json", action="store_true", help="print the answer as JSON")
    args = parser.parse_args(argv)
    mountpoint = os.path.abspath(args.mountpoint)
    path = socket_path(mountpoint)
    try:
        answer = ask(path)
    except FileNotFoundError:
        fail(f"no s3fmfs mount of yours answers for {mountpoint} (no socket {path})", 1)
    except OSError as exc:
        fail(f"no s3fmfs mount of yours answers for {mountpoint}: {exc.strerror or exc}", 1)
    except ValueError as exc:
        fail(f"the mount on {mountpoint} gave a garbled answer: {exc}", 1)
    print(json.dumps(answer, indent=2) if args.json else render(answer))
    return 0
