"""Where the log goes: stderr in the foreground, syslog (the journal) or a file as a daemon.

Invariants:
- Foreground: one stream handler on stderr, lines ``s3fmfs: LEVEL logger: message``, with
  the time (``s3fmfs: HH:MM:SS.mmm LEVEL ...``) for a mount and at DEBUG (``timestamps``).
- Daemon: ``log_file=`` when given; else syslog through ``/dev/log`` (facility daemon, ident
  ``s3fmfs[PID]``) when that socket exists and accepts a connection; else the file
  ``s3fmfs.log`` in the cache directory (``config.paths.cache_dir``), created mode 0700.
- A log file (``log_file=`` or the fallback) rotates: at ``ROTATE_BYTES`` it becomes
  ``FILE.1`` (``FILE.1`` becomes ``FILE.2``…), ``ROTATE_KEEP`` old files kept, so the log
  never takes more than ``(ROTATE_KEEP + 1) × ROTATE_BYTES``.
- Request lines come from ``s3fmfs.client`` at DEBUG (method, ``/bucket/key`` and the query
  string as sent, status, duration; never a header or a secret: the mount signs in headers,
  so a query carries no credential). httpx and httpcore stay at WARNING at every level:
  their lines show full URLs.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import socket
from pathlib import Path

from ..config import paths

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
FORMAT = "s3fmfs: %(levelname)s %(name)s: %(message)s"
TIMED_FORMAT = "s3fmfs: %(asctime)s.%(msecs)03d %(levelname)s %(name)s: %(message)s"
TIME_OF_DAY = "%H:%M:%S"
FILE_FORMAT = "%(asctime)s s3fmfs[%(process)d]: %(levelname)s %(name)s: %(message)s"
SYSLOG_SOCKET = "/dev/log"
#: A log file rotates at this size, and this many old files are kept (FILE.1 … FILE.3).
ROTATE_BYTES = 10 << 20
ROTATE_KEEP = 3


#: Where ``setup_logging`` last sent the log (``"stderr"``, ``"syslog"`` or a path).
_target = "stderr"


def log_target() -> str:
    """Where the log goes: ``"stderr"``, ``"syslog (journalctl -t s3fmfs)"`` or a file."""
    return "syslog (journalctl -t s3fmfs)" if _target == "syslog" else _target


def fallback_log_file(cache_dir: str | None) -> Path:
    """The daemon's log file when there is neither ``log_file=`` nor syslog."""
    return paths.cache_dir(cache_dir) / paths.LOG_FILE


def _syslog_handler() -> logging.Handler | None:
    if not os.path.exists(SYSLOG_SOCKET):
        return None
    try:
        handler = logging.handlers.SysLogHandler(
            address=SYSLOG_SOCKET,
            facility=logging.handlers.SysLogHandler.LOG_DAEMON,
            socktype=socket.SOCK_DGRAM,
        )
    except OSError:
        return None
    handler.ident = f"s3fmfs[{os.getpid()}]: "
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    return handler


def _file_handler(path: Path) -> logging.Handler:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    handler = logging.handlers.RotatingFileHandler(
        path, maxBytes=ROTATE_BYTES, backupCount=ROTATE_KEEP, encoding="utf-8"
    )
    handler.setFormatter(logging.Formatter(FILE_FORMAT))
    return handler


def setup_logging(
    level: int,
    *,
    daemon: bool = False,
    log_file: str | None = None,
    cache_dir: str | None = None,
    timestamps: bool = False,
) -> str:
    """Configure the root logger; where the log goes (``"stderr"``, ``"syslog"`` or a path).
    On stderr, lines carry the time of day with ``timestamps`` or at DEBUG."""
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        old.close()
    where: str
    handler: logging.Handler | None
    if not daemon:
        handler = logging.StreamHandler()
        timed = timestamps or level <= logging.DEBUG
        handler.setFormatter(
            logging.Formatter(TIMED_FORMAT, TIME_OF_DAY) if timed else logging.Formatter(FORMAT)
        )
        where = "stderr"
    elif log_file:
        handler = _file_handler(Path(log_file))
        where = log_file
    else:
        handler = _syslog_handler()
        where = "syslog"
        if handler is None:
            path = fallback_log_file(cache_dir)
            handler = _file_handler(path)
            where = str(path)
    global _target
    _target = where
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
    return where
