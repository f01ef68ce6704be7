"""What is checked before forking: the mountpoint, FUSE, the cache directory.

Invariants: each check is one line (``UsageError`` or a returned reason), never a traceback;
nothing here starts a thread (the daemon forks after these).
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import stat

from .common import UsageError

FUSE_DEVICE = "/dev/fuse"


def _unescape_mountinfo(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash as ``\\ooo``."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def mounted_fstype(path: str) -> str | None:
    """The type of the topmost mount at ``path`` (from /proc/self/mountinfo), or None."""
    found = None
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
            for line in f:
                fields = line.split()
                if len(fields) > 4 and _unescape_mountinfo(fields[4]) == path and " - " in line:
                    found = line.split(" - ", 1)[1].split()[0]
    except OSError:
        return None
    return found


def check_mountpoint(path: str, nonempty: bool) -> None:
    """UsageError unless ``path`` is a directory we can mount on (empty unless ``nonempty``).

    An autofs mount there (systemd's ``x-systemd.automount``) is waiting for this very mount:
    it is not looked into (that would block until we are done), only mounted over. Another
    s3fmfs mount there is refused; any other mount (a bind-mounted volume) is checked as a
    directory.
    """
    fstype = mounted_fstype(path)
    if fstype == "autofs":
        return
    if fstype is not None and fstype.startswith("fuse.s3fmfs"):
        raise UsageError(f"{path} is already an s3fmfs mount (fusermount3 -u {path})")
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise UsageError(f"mountpoint {path} does not exist") from None
    except OSError as exc:
        hint = f" (a stale mount? fusermount3 -u {path})" if exc.errno == errno.ENOTCONN else ""
        raise UsageError(f"mountpoint {path}: {exc.strerror}{hint}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise UsageError(f"mountpoint {path} is not a directory")
    if not nonempty:
        try:
            entries = os.listdir(path)
        except OSError as exc:
            raise UsageError(f"mountpoint {path}: {exc.strerror}") from None
        if entries:
            raise UsageError(
                f"mountpoint {path} is not empty (-o nonempty mounts over its content)"
            )


def check_fuse() -> str | None:
    """Why FUSE cannot be used here (one line), or None."""
    device = FUSE_DEVICE
    try:
        st = os.stat(device)
    except OSError:
        return (
            f"FUSE unavailable: {device} does not exist "
            "(modprobe fuse; in a container, pass the device in)"
        )
    if not stat.S_ISCHR(st.st_mode):
        return f"FUSE unavailable: {device} is not a character device"
    try:
        os.close(os.open(device, os.O_RDWR | os.O_CLOEXEC))
    except OSError as exc:
        return f"FUSE unavailable: cannot open {device}: {exc.strerror}"
    if os.geteuid() != 0 and shutil.which("fusermount3") is None:
        return "FUSE unavailable: fusermount3 not found (apt install fuse3)"
    return None


def prepare_cache_dir(path: str) -> None:
    """Create ``cache_dir`` (mode 0700) or check it is a writable directory."""
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cache_dir {path}: {exc.strerror}") from None
    if not os.path.isdir(path) or not os.access(path, os.W_OK | os.X_OK):
        raise UsageError(f"cache_dir {path} is not a writable directory")
