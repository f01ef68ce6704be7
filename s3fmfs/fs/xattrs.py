"""Extended attributes: ``user.*`` names kept as object metadata, ``s3.*`` read-only facts.

Where a ``user.NAME`` lives (one home per name):
- ``x-amz-meta-NAME`` (goofys's convention) when NAME is a header name that reads back the
  same: lower-case ASCII letters, digits, ``.``, ``_``, ``-``. S3 lower-cases metadata names,
  so any other name could not come back as it was set.
- Otherwise in s3fs-fuse's ``x-amz-meta-xattr`` map (its ``use_xattr`` format: the JSON-ish
  ``{"name":"base64(value)",...}``, URL-encoded), which keeps case and any character but
  ``" , : { }`` (its parser splits on them: EINVAL). Objects s3fs wrote with ``use_xattr``
  show their ``user.*`` names from that map; the map's other names (``system.posix_acl_*``,
  ``security.*``) are kept untouched and never shown. A name set or removed here leaves the
  map when its home is a header (a header beats the map when both hold a name).

Values: a header value is the bytes when they are printable ASCII without edge blanks (and not
starting ``=?``), an RFC 2047 ``=?UTF-8?B?...?=`` word for other UTF-8 text without control
characters, and ``=?binary?B?<base64>?=`` for anything else (empty values too): every value
reads back byte for byte. Map values are base64, as s3fs writes them.

Invariants:
- s3fmfs's and s3fs's own metadata names (``attrs.S3FS_META``: mode, uid, gid, mtime, ctime,
  atime, rdev, xattr) are never attributes: ``user.mode`` and the like are EPERM to set or
  remove, ENODATA to read.
- ``listxattr`` answers from the attributes already known (``Attr.meta``, a local file's
  pending metadata): no request for an entry stat already fetched; a listing's attributes
  (not complete) cost one HEAD. ``s3.*`` names are readable, never listed (``cp -a`` and
  ``rsync -X`` copy what is listed, and could not set them on the copy), never settable (EPERM).
- A change of a saved object is one HEAD and one copy onto itself (REPLACE: the other
  metadata, the content type and the bytes kept: ``Namespace.write_file_meta``); of a file
  with unsaved content, it rides on its upload (``Content.extra_meta``), no request.
- The whole user metadata sent (names and values, s3fmfs's own included) stays within S3's
  2 KB (``META_LIMIT``): more is E2BIG, checked before the copy (or before an unsaved file
  takes it).
- Other namespaces (``security.*``, ``system.*``, ``trusted.*``, anything else) are ENOTSUP:
  ``ls -l`` and ``cp -a`` asking for ACLs or SELinux labels stay quiet.
"""

from __future__ import annotations

import base64
import binascii
import errno
import re
import urllib.parse
from collections.abc import Mapping

from .attrs import S3FS_META, Attr, Kind, metadata_of, user_meta
from .errno_map import FsError
from .inodes import ROOT_INODE, Node
from .namespace import Namespace
from .pins import Pins
from .store import PresigningStore

USER = "user."
#: Read-only attributes from the object itself (goofys's ``s3.etag``, ``s3.storage-class``).
VIRTUAL = ("s3.etag", "s3.storage-class", "s3.version-id", "s3.content-type", "s3.url")
VIRTUAL_PREFIX = "s3."
#: s3fs-fuse's map of extended attributes (``use_xattr``).
S3FS_MAP = "xattr"
#: S3's limit on user metadata: the UTF-8 bytes of every name and value.
META_LIMIT = 2048
#: Lifetime of the presigned URL ``s3.url`` gives.
URL_EXPIRES = 3600
#: Linux's limits on an attribute's name and value (``XATTR_NAME_MAX``, ``XATTR_SIZE_MAX``).
NAME_MAX = 255

_HEADER_NAME = re.compile(r"[a-z0-9._-]+")
_MAP_UNSAFE = frozenset('",:{}')
_BINARY = "=?binary?B?"
_UTF8 = "=?UTF-8?B?"


# -- names and values -----------------------------------------------------------------------------


def header_name(rest: str) -> str | None:
    """The metadata name of ``user.<rest>`` when its home is a header, else None (the map)."""
    return rest if _HEADER_NAME.fullmatch(rest) else None


def encode_value(value: bytes) -> str:
    """A header-safe form of ``value`` that ``decode_value`` turns back into it exactly."""
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if (
        text
        and text == text.strip()
        and not text.startswith("=?")
        and not any(ord(c) < 0x20 or ord(c) == 0x7F for c in text)
    ):
        if text.isascii():
            return text
        return _UTF8 + base64.b64encode(value).decode("ascii") + "?="
    return _BINARY + base64.b64encode(value).decode("ascii") + "?="


def decode_value(text: str) -> bytes:
    """A header value back to bytes (the client has already decoded RFC 2047 UTF-8 words)."""
    for marker in (_BINARY, _UTF8):
        if text.startswith(marker) and text.endswith("?="):
            try:
                return base64.b64decode(text[len(marker) : -2], validate=True)
            except (binascii.Error, ValueError):
                break
    return text.encode("utf-8")


def parse_s3fs_map(text: str) -> dict[str, bytes]:
    """s3fs-fuse's ``x-amz-meta-xattr``: URL-encoded ``{"name":"base64",...}``; malformed
    pairs are skipped, as s3fs skips them."""
    raw = urllib.parse.unquote(text)
    start, end = raw.find("{"), raw.rfind("}")
    if start < 0 or end <= start:
        return {}
    found: dict[str, bytes] = {}
    for pair in raw[start + 1 : end].split(","):
        key, sep, val = pair.partition(":")
        key, val = key.strip(), val.strip()
        if not sep or len(key) < 2 or len(val) < 2 or key[0] != '"' or key[-1] != '"':
            continue
        if val[0] != '"' or val[-1] != '"':
            continue
        try:
            found[key[1:-1]] = base64.b64decode(val[1:-1])
        except (binascii.Error, ValueError):
            continue
    return found


def build_s3fs_map(entries: Mapping[str, bytes]) -> str:
    """The header value s3fs-fuse writes for ``entries`` (its ``build_xattrs``)."""
    body = ",".join(
        f'"{name}":"{base64.b64encode(value).decode("ascii")}"'
        for name, value in sorted(entries.items())
    )
    return urllib.parse.quote("{" + body + "}", safe="/-_.~")


def _map_of(meta: Mapping[str, str]) -> dict[str, bytes]:
    text = meta.get(S3FS_MAP)
    return parse_s3fs_map(text) if text else {}


def _in_header(meta: Mapping[str, str], rest: str) -> bool:
    """Whether ``user.<rest>`` is held by its own header (whoever wrote it)."""
    return rest in meta and rest not in S3FS_META


def names(meta: Mapping[str, str]) -> list[str]:
    """The ``user.*`` names an object's user metadata holds (headers, then s3fs's map)."""
    found = [USER + k for k in sorted(meta) if _in_header(meta, k)]
    seen = set(found)
    for name in sorted(_map_of(meta)):
        if _shown_from_map(name) and name not in seen:
            found.append(name)
    return found


def _shown_from_map(name: str) -> bool:
    """Whether a name of s3fs's map is an attribute here (``user.*``, not a reserved name)."""
    rest = name[len(USER) :]
    return name.startswith(USER) and bool(rest) and rest.lower() not in S3FS_META


def value(meta: Mapping[str, str], name: str) -> bytes | None:
    """The value of ``user.*`` attribute ``name`` (None: not set)."""
    rest = name[len(USER) :]
    if _in_header(meta, rest):
        return decode_value(meta[rest])
    return _map_of(meta).get(name) if _shown_from_map(name) else None


def meta_size(metadata: Mapping[str, str]) -> int:
    """What S3 counts against ``META_LIMIT``: the UTF-8 bytes of the names and values."""
    return sum(len(k.encode("utf-8")) + len(v.encode("utf-8")) for k, v in metadata.items())


def edited(meta: Mapping[str, str], name: str, new: bytes | None) -> dict[str, str]:
    """The user metadata ``meta`` with ``user.*`` attribute ``name`` set to ``new`` (None:
    removed; ENODATA when it is not there). The name leaves its other home, if any."""
    result = dict(meta)
    rest = name[len(USER) :]
    entries = _map_of(result)
    in_map = name in entries
    if new is None and not in_map and not _in_header(result, rest):
        raise FsError(errno.ENODATA)
    if _in_header(result, rest):
        del result[rest]
    entries.pop(name, None)
    if new is not None:
        if header_name(rest) is not None:
            result[rest] = encode_value(new)
        else:
            entries[name] = new
    if entries:
        result[S3FS_MAP] = build_s3fs_map(entries)
    elif in_map:
        result.pop(S3FS_MAP, None)  # s3fs drops an empty map too
    return result


def check_name(raw: bytes) -> str:
    """The name as text, for a ``user.*`` or ``s3.*`` name; ENOTSUP for other namespaces,
    EINVAL for a name that cannot be stored."""
    if len(raw) > NAME_MAX:
        raise FsError(errno.ERANGE)
    try:
        name = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise FsError(errno.EINVAL, "extended attribute names must be UTF-8") from None
    if name.startswith(VIRTUAL_PREFIX):
        return name
    if not name.startswith(USER):
        raise FsError(errno.ENOTSUP, f"{name}: only user.* attributes are kept")
    rest = name[len(USER) :]
    if not rest:
        raise FsError(errno.EINVAL)
    header = header_name(rest)
    if header is None and (any(c in _MAP_UNSAFE for c in name) or not name.isprintable()):
        raise FsError(errno.EINVAL, f"{name!r}: not a name S3 metadata can keep")
    return name


# -- the operations -------------------------------------------------------------------------------


class Xattrs:
    """getxattr, setxattr, listxattr and removexattr of a mount."""

    def __init__(self, ns: Namespace, pins: Pins) -> None:
        self.ns = ns
        self.pins = pins

    def _node(self, ino: int) -> Node:
        return self.ns.inodes.get(ino)

    async def _getattr(self, ino: int) -> Attr:
        """The entry's attributes (a getattr: from the caches while fresh)."""
        return await self.ns.getattr(ino)

    def _local_meta(self, node: Node) -> dict[str, str] | None:
        """The pending user metadata of a node whose truth is here (None: not local)."""
        if node.ino == ROOT_INODE or not self.ns.is_local(node):
            return None
        if node.has_content:
            return dict(node.content.extra_meta)
        return dict((node.attr.meta if node.attr is not None else None) or ())

    def _key(self, node: Node, attr: Attr) -> str:
        """The object holding the entry's metadata (a directory's marker)."""
        if attr.kind is Kind.DIR:
            return self.ns.keys.dir_prefix(node.path)
        return self.ns.keys.file_key(node.path)

    async def meta_of(self, ino: int) -> dict[str, str]:
        """The entry's user metadata: known, else fetched (one HEAD)."""
        node = self._node(ino)
        local = self._local_meta(node)
        if local is not None:
            return local
        if ino == ROOT_INODE and not self.ns.keys.prefix:
            return {}  # the bucket itself: no object
        attr = self.ns.root_attr if ino == ROOT_INODE else await self._getattr(ino)
        if attr.meta is not None and not self.ns.settings.nometa:
            return dict(attr.meta)
        if attr.kind is Kind.DIR:
            info = await self.ns.head(self._key(node, attr))
            if info is None:  # implicit, or in an older form: what the namespace says
                attr = await self.ns.head_dir(node.path, attr.old_forms)
                return dict(attr.meta or ())
        else:
            info = await self.ns.head(self._key(node, attr))
            if info is None:
                raise FsError(errno.ENOENT)
        return dict(user_meta(info.metadata or {}))

    async def listxattr(self, ino: int) -> list[bytes]:
        return [n.encode("utf-8") for n in names(await self.meta_of(ino))]

    async def getxattr(self, ino: int, raw: bytes) -> bytes:
        name = check_name(raw)
        if name.startswith(VIRTUAL_PREFIX):
            return await self._virtual(ino, name)
        found = value(await self.meta_of(ino), name)
        if found is None:
            raise FsError(errno.ENODATA)
        return found

    async def _virtual(self, ino: int, name: str) -> bytes:
        """An ``s3.*`` attribute: ENODATA when the entry has no object (yet) or the fact is
        unknown (no version id in an unversioned bucket)."""
        if name not in VIRTUAL:
            raise FsError(errno.ENODATA)
        node = self._node(ino)
        if ino == ROOT_INODE and not self.ns.keys.prefix:
            raise FsError(errno.ENODATA)
        if self.ns.is_local(node):
            raise FsError(errno.ENODATA)  # unsaved content: no object that holds it yet
        attr = self.ns.root_attr if ino == ROOT_INODE else await self._getattr(ino)
        key = self._key(node, attr)
        if name == "s3.url":
            if attr.kind is Kind.DIR:
                raise FsError(errno.ENODATA)
            if not isinstance(self.ns.store, PresigningStore):
                raise FsError(errno.ENODATA)
            return self.ns.store.presign_get(key, URL_EXPIRES).encode("ascii")
        if name == "s3.etag" and attr.etag:
            return attr.etag.strip('"').encode("ascii", "replace")
        info = await self.ns.head(key)
        if info is None:
            raise FsError(errno.ENODATA)
        fact = {
            "s3.etag": info.etag.strip('"'),
            "s3.storage-class": info.storage_class or "STANDARD",
            "s3.version-id": info.version_id,
            "s3.content-type": info.content_type,
        }[name]
        if not fact:
            raise FsError(errno.ENODATA)
        return fact.encode("utf-8", "replace")

    async def setxattr(self, ino: int, raw: bytes, new: bytes) -> None:
        name = check_name(raw)
        if name.startswith(VIRTUAL_PREFIX):
            raise FsError(errno.EPERM, f"{name} is read-only")
        await self._change(ino, name, new)

    async def removexattr(self, ino: int, raw: bytes) -> None:
        name = check_name(raw)
        if name.startswith(VIRTUAL_PREFIX):
            raise FsError(errno.EPERM, f"{name} is read-only")
        await self._change(ino, name, None)

    async def _change(self, ino: int, name: str, new: bytes | None) -> None:
        """Set (``new``) or remove (None) ``user.*`` attribute ``name``; EPERM for the names
        of s3fmfs's and s3fs's own metadata."""
        if name[len(USER) :].lower() in S3FS_META:
            raise FsError(errno.EPERM, f"{name}: the name of s3fmfs's own metadata")
        ns = self.ns
        node = self._node(ino)
        if ino == ROOT_INODE and not ns.keys.prefix:
            raise FsError(errno.ENOTSUP, "the bucket's root has no object to keep attributes")
        async with ns.claim(lambda: (node.path,)):
            ns.check_writable()
            attr = ns.root_attr if ino == ROOT_INODE else await self._getattr(ino)

            def edit(meta: dict[str, str]) -> dict[str, str]:
                result = edited(meta, name, new)
                if meta_size(metadata_of(attr, result)) > META_LIMIT:
                    raise FsError(errno.E2BIG, "S3 keeps 2 KB of metadata per object")
                return result

            if ino == ROOT_INODE:
                ns.root_attr = ns.inodes.root.attr = await ns.write_dir_meta("", attr, edit)
                return
            async with node.lock:
                if ns.is_local(node):  # rides on the upload of its content
                    if node.has_content:
                        node.content.extra_meta = edit(dict(node.content.extra_meta))
                    elif node.attr is not None:  # unlinked: kept for its handles only
                        kept = edit(dict(node.attr.meta or ()))
                        node.attr = node.attr.with_changes(meta=user_meta(kept))
                    return
                if attr.kind is Kind.DIR:
                    new_attr = await ns.write_dir_meta(node.path, attr, edit)
                else:
                    new_attr = await ns.write_file_meta(
                        node.path, attr, self.pins.get(node.ino), edit
                    )
                if node.has_content:  # a later upload of its buffer keeps them
                    node.content.extra_meta = dict(new_attr.meta or ())
                node.attr = new_attr
                if node.path_attached:
                    ns.cache.note_exists(node.path, new_attr)
