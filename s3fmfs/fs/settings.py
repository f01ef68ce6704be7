"""What the filesystem layer is configured with: ``FsSettings``.

Invariants: the fs layer never sees the process's configuration (``MountOptions``, endpoints,
credentials, files); the configuration layer builds one ``FsSettings`` per mount
(``MountOptions.fs_settings``). The defaults are the mount's defaults, so tests can build the
core with only what they change.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .attrs import Defaults, Forced


@dataclass(frozen=True)
class FsSettings:
    """The filesystem's knobs: ownership defaults (and forced owner and modes), caches,
    read-ahead and uploads."""

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
    forced: Forced = field(
        default_factory=Forced
    )  # owner/mode shown for every entry (s3fs's uid=, gid=, umask=)

    @property
    def defaults(self) -> Defaults:
        """Owner and modes of objects without metadata."""
        return Defaults(self.uid, self.gid, self.file_mode, self.dir_mode)
