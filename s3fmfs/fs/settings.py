"""What the filesystem layer is configured with: ``FsSettings``.

Invariants: the fs layer never sees the process's configuration (``MountOptions``, endpoints,
credentials, files); the configuration layer builds one ``FsSettings`` per mount
(``MountOptions.fs_settings``). The defaults are the mount's defaults, so tests can build the
core with only what they change.
"""

from __future__ import annotations

from dataclasses import dataclass

from .attrs import Defaults


@dataclass(frozen=True)
class FsSettings:
    """The filesystem's knobs: ownership defaults, caches, read-ahead and uploads."""

    uid: int = 0
    gid: int = 0
    file_mode: int = 0o644  # permission bits of objects without metadata
    dir_mode: int = 0o755
    nometa: bool = False
    ro: bool = False
    stat_ttl: float = 5.0
    dir_ttl: float = 5.0
    neg_ttl: float = 5.0
    readahead_mb: int = 16
    read_concurrency: int = 4
    part_size_mb: int = 8
    upload_concurrency: int = 4

    @property
    def defaults(self) -> Defaults:
        """Owner and modes of objects without metadata."""
        return Defaults(self.uid, self.gid, self.file_mode, self.dir_mode)
