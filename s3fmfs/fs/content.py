"""The content of one file inode: where its bytes are, and what must still go to the bucket.

States (``ContentState``) and the only ways between them, each a method of ``Content``
(anything else raises ``ContentError`` and changes nothing)::

    method         from                              to
    created        CLEAN                             DIRTY (new: no object yet)
    filled         CLEAN | DISCARDED                 BUFFERED | DISCARDED
    written        BUFFERED, DIRTY, KEPT             DIRTY
                   STREAMING | DISCARDED             unchanged
    streaming      DIRTY                             STREAMING
    end_stream     STREAMING (else: unchanged)       DIRTY; the stream, to abort
    begin_upload   DIRTY, STREAMING, KEPT            UPLOADING; the stream, to complete
    uploaded       UPLOADING                         BUFFERED
    failed         UPLOADING                         KEPT (a recovery copy) or DIRTY
    discard        any but UPLOADING                 DISCARDED
    close_buffer   CLEAN, BUFFERED | DISCARDED       CLEAN | DISCARDED (buffer freed)
    close          any without a stream              CLEAN | DISCARDED (buffer freed)

- CLEAN: no buffer; the bucket's object is the content (reads are ranged GETs).
- BUFFERED: a buffer holding what the bucket holds (saved, or filled for a write).
- DIRTY: the buffer holds changes the bucket does not have (``new``: nor any object yet).
- STREAMING: DIRTY, and its parts go up while it is written (``stream``, ``upload``).
- UPLOADING: a save is sending the buffer (under the inode's lock).
- KEPT: DIRTY after an upload that failed for good, a copy of this version of the buffer in
  the recovery folder; the next save tries again.
- DISCARDED: the file left the namespace (unlink, replaced by a rename) while open: its
  buffer, if any, still serves its handles, takes their writes, and is never uploaded.

Invariants (checked by every transition):
- ``buffer`` is None exactly in CLEAN (and in DISCARDED without one); every other state has
  one. ``stream`` is set only in STREAMING (and in DISCARDED until ``end_stream`` aborts it).
- *Unsaved* (``dirty``) is DIRTY, STREAMING, UPLOADING or KEPT; ``new`` implies unsaved.
  The mount's index of unsaved inodes (``InodeTable.unsaved``: listings merge them in,
  lookups trust them) is kept by these transitions only, never by hand.
- ``version`` grows with every change of the content (write, truncation, a buffer made or
  closed): read-ahead drops blocks of older versions, and a recovery copy names the version
  it holds (``stamp``).
- ``opened_etag``: the ETag the last open saw, "" once written here (``open``'s keep_cache).

Concurrency: transitions never await, so each is atomic on the trio thread. The fills,
writes, truncations and uploads around them hold the inode's lock (``files``); reads of a
buffer need no lock.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

from .writebuf import WriteBuffer

if TYPE_CHECKING:
    from .upload import StreamingUpload


class ContentState(enum.Enum):
    CLEAN = "clean"
    BUFFERED = "buffered"
    DIRTY = "dirty"
    STREAMING = "streaming"
    UPLOADING = "uploading"
    KEPT = "kept"
    DISCARDED = "discarded"


class ContentError(RuntimeError):
    """An illegal transition: a bug in the caller, never a user's error."""


S = ContentState
#: States whose buffer holds what the bucket does not have.
UNSAVED = frozenset({S.DIRTY, S.STREAMING, S.UPLOADING, S.KEPT})


class Content:
    """One file inode's content, changed only through its transitions."""

    __slots__ = (
        "_index",
        "_state",
        "buffer",
        "content_type",
        "extra_meta",
        "ino",
        "new",
        "opened_etag",
        "stream",
        "version",
    )

    def __init__(self, ino: int, index: set[int] | None = None) -> None:
        self.ino = ino
        self._index = index  # the mount's unsaved inodes (``InodeTable.unsaved``)
        self._state = S.CLEAN
        self.buffer: WriteBuffer | None = None
        self.stream: StreamingUpload | None = None
        self.new = False  # created here: no object in the bucket yet
        self.version = 0
        self.content_type = ""  # of the object, kept by uploads
        self.extra_meta: dict[str, str] = {}  # others' user metadata, kept by uploads
        self.opened_etag = ""

    def __repr__(self) -> str:
        return f"Content({self.ino}, {self._state.value}, v{self.version})"

    # -- reading the state ------------------------------------------------------------------

    @property
    def state(self) -> ContentState:
        return self._state

    @property
    def dirty(self) -> bool:
        """The buffer holds changes the bucket does not have (an upload is due)."""
        return self._state in UNSAVED

    @property
    def stamp(self) -> tuple[int, int]:
        """(inode, version): names this content in a recovery copy."""
        return self.ino, self.version

    # -- transitions -------------------------------------------------------------------------

    def _require(self, *states: ContentState) -> None:
        if self._state not in states:
            wanted = ", ".join(s.name for s in states)
            raise ContentError(f"inode {self.ino}: {self._state.name}, expected {wanted}")

    def _become(self, state: ContentState) -> None:
        """Enter ``state`` once the invariants hold for it (the unsaved index follows)."""
        if self.buffer is None and state not in (S.CLEAN, S.DISCARDED):
            raise ContentError(f"inode {self.ino}: {state.name} without a buffer")
        if self.stream is not None and state not in (S.STREAMING, S.DISCARDED):
            raise ContentError(f"inode {self.ino}: {state.name} with a stream")
        if self.new and state not in UNSAVED:
            raise ContentError(f"inode {self.ino}: new but {state.name}")
        self._state = state
        if self._index is not None:
            if state in UNSAVED:
                self._index.add(self.ino)
            else:
                self._index.discard(self.ino)

    def created(self, buffer: WriteBuffer) -> None:
        """A file created here: its (empty) buffer is all of it, nothing in the bucket yet."""
        self._require(S.CLEAN)
        self.buffer, self.new = buffer, True
        self.version += 1
        self._become(S.DIRTY)

    def filled(self, buffer: WriteBuffer) -> None:
        """A buffer made for a write: filled with the object's bytes (or empty, when none
        are needed). On a discarded file, it only serves its handles."""
        self._require(S.CLEAN, S.DISCARDED)
        if self.buffer is not None:
            raise ContentError(f"inode {self.ino}: a second buffer")
        self.buffer = buffer
        self.version += 1
        if self._state is S.CLEAN:
            self._become(S.BUFFERED)

    def written(self) -> None:
        """The buffer changed (write, truncation): unsaved; a discarded file stays so."""
        self._require(S.BUFFERED, S.DIRTY, S.STREAMING, S.KEPT, S.DISCARDED)
        if self.buffer is None:
            raise ContentError(f"inode {self.ino}: written without a buffer")
        self.version += 1
        self.opened_etag = ""  # written here: the next open drops the page cache
        if self._state in (S.BUFFERED, S.KEPT):
            self._become(S.DIRTY)

    def streaming(self, stream: StreamingUpload) -> None:
        """Parts of the (unsaved) buffer go up while it is written."""
        self._require(S.DIRTY)
        self.stream = stream
        self._become(S.STREAMING)

    def end_stream(self) -> StreamingUpload | None:
        """Stop streaming: the stream, for the caller to abort (the whole buffer goes up at
        the next save); None when there was none."""
        stream, self.stream = self.stream, None
        if self._state is S.STREAMING:
            self._become(S.DIRTY)
        return stream

    def begin_upload(self) -> StreamingUpload | None:
        """A save starts (caller holds the inode's lock): the stream it may complete."""
        self._require(S.DIRTY, S.STREAMING, S.KEPT)
        stream, self.stream = self.stream, None
        self._become(S.UPLOADING)
        return stream

    def uploaded(self) -> None:
        """The bucket holds the buffer now."""
        self._require(S.UPLOADING)
        self.new = False
        self._become(S.BUFFERED)

    def failed(self, kept: bool) -> None:
        """The upload failed for good; ``kept``: a recovery copy of this version exists."""
        self._require(S.UPLOADING)
        self._become(S.KEPT if kept else S.DIRTY)

    def discard(self) -> None:
        """The file left the namespace: its buffer serves open handles only, never uploaded
        (a stream left is aborted by ``end_stream``)."""
        if self._state is S.UPLOADING:
            raise ContentError(f"inode {self.ino}: discarded while uploading")
        self.new = False
        self._become(S.DISCARDED)

    def close_buffer(self) -> None:
        """Free the buffer of saved (or discarded) content: reads go to the bucket again."""
        if self.dirty:
            raise ContentError(f"inode {self.ino}: closing the buffer of unsaved content")
        if self.stream is not None:
            raise ContentError(f"inode {self.ino}: closing a buffer a stream reads")
        if self.buffer is not None:
            self.buffer.close()
            self.buffer = None
        self.version += 1
        if self._state is S.BUFFERED:
            self._become(S.CLEAN)

    def close(self) -> None:
        """The mount stops (after ``flush_all``) or the inode is dropped: free the buffer
        whatever it holds (a stream must have been ended)."""
        if self.stream is not None:
            raise ContentError(f"inode {self.ino}: closed with a stream")
        if self.buffer is not None:
            self.buffer.close()
            self.buffer = None
        self.new = False
        self._become(S.DISCARDED if self._state is S.DISCARDED else S.CLEAN)
