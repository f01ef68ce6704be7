"""Where a mount keeps things on disk: the one place the cache and state directories are named.

Invariants:
- The cache directory is ``cache_dir=`` when given, else ``$XDG_CACHE_HOME/s3fmfs``, else
  ``~/.cache/s3fmfs`` (:func:`cache_dir`). Everything a mount keeps under it (write buffers'
  recovery copies, the upload journal, the metadata cache, the daemon's fallback log) is named
  from this one function.
- The state directory (the recovery copies' fallback, usually another filesystem than the
  cache) is ``$XDG_STATE_HOME/s3fmfs``, else ``~/.local/state/s3fmfs`` (:func:`state_dir`).
- Pure: nothing is created or checked here (``commands.cli`` checks ``cache_dir=`` before
  forking; the users of each path create what they need, private).
"""

from __future__ import annotations

import os
from pathlib import Path

from ..fs.metacache import FILE_NAME as METACACHE_FILE
from .options import MountOptions

#: The recovery copies' folder in the cache directory (and in the state directory).
RECOVERY_FOLDER = "recovery"
#: The daemon's log file when neither ``log_file=`` nor syslog is there.
LOG_FILE = "s3fmfs.log"


def cache_dir(configured: str | None = None) -> Path:
    """The cache directory: ``configured`` (``cache_dir=``), else the user's (XDG) one."""
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "s3fmfs"


def state_dir() -> Path:
    """``$XDG_STATE_HOME/s3fmfs``, else ``~/.local/state/s3fmfs`` (an absolute XDG value only)."""
    base = os.environ.get("XDG_STATE_HOME", "")
    if not os.path.isabs(base):
        base = os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "s3fmfs"


def metacache_file(opts: MountOptions) -> Path:
    """The metadata cache of a mount: ``metacache_file=``, else in the cache directory."""
    if opts.metacache_file:
        return Path(opts.metacache_file)
    return cache_dir(opts.cache_dir) / METACACHE_FILE


def endpoint_id(opts: MountOptions) -> str:
    """``scheme://host:port`` of the endpoint: what the mount's keys are scoped by on disk
    (metadata cache rows, journal entries, recovery copies' names)."""
    secure, host, port = opts.endpoint_parts
    return f"{'https' if secure else 'http'}://{host}:{port}"
