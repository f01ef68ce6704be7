"""Special files: FIFOs, sockets, character and block devices, as s3fs-fuse stores them.

A special file is an empty object whose ``x-amz-meta-mode`` carries its type bits (what
s3fs-fuse's ``mknod`` writes), plus, for a device, its number in ``x-amz-meta-rdev`` (decimal,
the ``dev_t`` FUSE hands over; s3fs-fuse 1.90 keeps none, and a device it made reads as 0).

Invariants:
- The bucket only names a special file: the kernel serves FIFOs, sockets and devices itself
  and never sends their opens, reads or writes here; their attributes, names and metadata
  (chmod, chown, utimens, rename, unlink) go through the same paths as a file's.
- A special file is in the bucket once ``make`` returns (one PUT, like a symlink): nothing of
  it is ever buffered or unsaved.
- A non-device carries rdev 0 whatever it was asked with.
"""

from __future__ import annotations

import errno
import stat

from .attrs import Attr, Kind, metadata_of
from .errno_map import FsError
from .namespace import Namespace, content_type_of

#: The file type of ``mknod``'s mode → the kind made (regular files are ``FsCore.create``'s).
KIND_OF_MKNOD = {
    stat.S_IFIFO: Kind.FIFO,
    stat.S_IFSOCK: Kind.SOCKET,
    stat.S_IFCHR: Kind.CHAR,
    stat.S_IFBLK: Kind.BLOCK,
}


def special_kind(mode: int) -> Kind:
    """The kind ``mknod`` makes of ``mode``; EINVAL for a type it cannot make (a directory or a
    symlink: mknod(2) refuses both)."""
    kind = KIND_OF_MKNOD.get(stat.S_IFMT(mode))
    if kind is None:
        raise FsError(errno.EINVAL, f"mknod of file type {stat.S_IFMT(mode):o}")
    return kind


async def make(
    ns: Namespace, parent_ino: int, name: bytes, mode: int, rdev: int, uid: int, gid: int
) -> tuple[int, Attr]:
    """Create the special file ``name`` (EEXIST if the name is taken) and take one lookup
    reference on its inode: (inode, attributes)."""
    kind = special_kind(mode)
    async with ns.claim(ns.child_paths(parent_ino, name, creating=True)):
        path = await ns.new_name(parent_ino, name)
        attr = Attr(
            kind,
            stat.S_IMODE(mode) | kind.type_bits,
            uid,
            gid,
            0,
            ns.now(),
            rdev=rdev & 0xFFFFFFFF if kind.device else 0,
        )
        key = ns.keys.file_key(path)
        # s3fs-fuse types it by its name, like any file it creates
        result = await ns.store.put(key, b"", metadata_of(attr), content_type_of(path))
        await ns.object_changed(key)
        attr = attr.with_changes(etag=result.etag)
        node = ns.inodes.node_for(path, kind)
        node.attr = attr
        ns.inodes.ref(node)
        ns.cache.note_exists(path, attr)
        return node.ino, attr
