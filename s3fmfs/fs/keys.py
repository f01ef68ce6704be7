"""Path ↔ key rules: how a filesystem path maps onto object keys under the mount prefix.

Invariants:
- A *path* is relative to the mount root, ``/``-separated, without leading or trailing ``/``;
  the root is ``""``. Every component of a path is a valid name (``valid_name``).
- The mount prefix is ``""`` (whole bucket) or ends with exactly one ``/`` (``some/prefix/``).
- A file or symlink at ``path`` is the object ``prefix + path``; a directory at ``path`` is
  everything under ``prefix + path + "/"`` (its marker object is that key itself).
- Names are bytes at the FUSE boundary and UTF-8 text in keys: a name that is not UTF-8 can
  never be a key.
"""

from __future__ import annotations

NAME_MAX = 255


def valid_name(name: str) -> bool:
    """Whether ``name`` can be one path component: not empty, not ``.``/``..``, no ``/`` or
    NUL, at most 255 bytes of UTF-8."""
    if name in ("", ".", ".."):
        return False
    if "/" in name or "\0" in name:
        return False
    try:
        return len(name.encode("utf-8")) <= NAME_MAX
    except UnicodeEncodeError:
        return False


def decode_name(name: bytes) -> str | None:
    """A FUSE name as key text, or None when it is not valid UTF-8 (it cannot be a key)."""
    try:
        return name.decode("utf-8")
    except UnicodeDecodeError:
        return None


def encode_name(name: str) -> bytes:
    """A key component as a FUSE name."""
    return name.encode("utf-8")


def join(parent: str, name: str) -> str:
    """The path of ``name`` inside directory ``parent``."""
    return f"{parent}/{name}" if parent else name


def parent_of(path: str) -> str:
    """The directory containing ``path`` (the root's parent is the root)."""
    return path.rsplit("/", 1)[0] if "/" in path else ""


def name_of(path: str) -> str:
    """The last component of ``path``."""
    return path.rsplit("/", 1)[-1]


def is_under(path: str, directory: str) -> bool:
    """Whether ``path`` is strictly inside ``directory`` (any depth)."""
    if directory == "":
        return path != ""
    return path.startswith(directory + "/")


def normalize_prefix(prefix: str) -> str:
    """``/some//prefix/`` → ``some/prefix/``; ``""`` or ``/`` → ``""``.

    Raises ValueError when a component is not a valid name (``.``, ``..``, too long).
    """
    parts = [p for p in prefix.split("/") if p]
    for part in parts:
        if not valid_name(part):
            raise ValueError(f"invalid prefix component {part!r}")
    return "".join(p + "/" for p in parts)


class KeyMap:
    """Paths ↔ keys for one mount prefix."""

    def __init__(self, prefix: str = "") -> None:
        self.prefix = normalize_prefix(prefix)

    def file_key(self, path: str) -> str:
        """The object key of the file or symlink at ``path``."""
        return self.prefix + path

    def dir_prefix(self, path: str) -> str:
        """The listing prefix (and marker key) of the directory at ``path``."""
        return self.prefix + path + "/" if path else self.prefix

    def path_of(self, key: str) -> str | None:
        """The path of ``key`` (a trailing ``/`` marks a directory and is dropped), or None
        when the key is outside the prefix or some component is not a valid name."""
        if not key.startswith(self.prefix):
            return None
        rest = key[len(self.prefix) :]
        if rest.endswith("/"):
            rest = rest[:-1]
        if rest == "":
            return ""
        if all(valid_name(part) for part in rest.split("/")):
            return rest
        return None
