"""The content state machine (``s3fmfs.fs.content``): legal paths, and every illegal
transition refused (no moto, no core: the object alone)."""

from __future__ import annotations

import pytest

from s3fmfs.fs.content import Content, ContentError, ContentState
from s3fmfs.fs.writebuf import WriteBuffer

S = ContentState


class FakeStream:
    """Stands for a ``StreamingUpload`` (the content only keeps it)."""


def state(content: Content) -> ContentState:
    """(A call: mypy would narrow ``content.state`` across transitions.)"""
    return content.state


async def buffer() -> WriteBuffer:
    return await WriteBuffer.create(None, None)


async def test_a_new_file_streams_uploads_and_closes() -> None:
    index: set[int] = set()
    content = Content(7, index)
    assert state(content) is S.CLEAN and not content.dirty and 7 not in index
    content.created(await buffer())
    assert state(content) is S.DIRTY and content.new and index == {7}
    content.streaming(FakeStream())  # type: ignore[arg-type]
    assert state(content) is S.STREAMING and content.dirty
    content.written()
    assert state(content) is S.STREAMING  # writes keep it streaming
    stream = content.begin_upload()
    assert isinstance(stream, FakeStream) and content.stream is None
    assert state(content) is S.UPLOADING and index == {7}  # still unsaved while it goes up
    content.uploaded()
    assert state(content) is S.BUFFERED and not content.new and index == set()
    version = content.version
    content.close_buffer()
    assert state(content) is S.CLEAN and content.buffer is None and content.version > version


async def test_a_failed_upload_is_kept_then_written_again() -> None:
    index: set[int] = set()
    content = Content(3, index)
    content.filled(await buffer())
    assert state(content) is S.BUFFERED and index == set()
    content.written()
    assert state(content) is S.DIRTY and content.opened_etag == "" and index == {3}
    assert content.begin_upload() is None
    content.failed(kept=True)
    assert state(content) is S.KEPT and content.dirty and index == {3}
    content.written()  # a newer version: the copy no longer holds it
    assert state(content) is S.DIRTY
    content.begin_upload()
    content.failed(kept=False)  # no copy could be written: unsaved, plainly
    assert state(content) is S.DIRTY


async def test_a_discarded_file_keeps_serving_but_is_never_unsaved() -> None:
    index: set[int] = set()
    content = Content(5, index)
    content.created(await buffer())
    content.streaming(FakeStream())  # type: ignore[arg-type]
    content.discard()
    assert state(content) is S.DISCARDED and not content.dirty and not content.new
    assert index == set() and content.stream is not None  # left for end_stream to abort
    assert content.end_stream() is not None and state(content) is S.DISCARDED
    content.written()  # writes of its open handles go on, to nothing
    assert state(content) is S.DISCARDED and not content.dirty
    with pytest.raises(ContentError):
        content.begin_upload()
    content.close_buffer()
    assert content.buffer is None and state(content) is S.DISCARDED


async def test_illegal_transitions_raise() -> None:
    content = Content(9)
    with pytest.raises(ContentError):
        content.written()  # no buffer to write to
    with pytest.raises(ContentError):
        content.uploaded()
    with pytest.raises(ContentError):
        content.begin_upload()  # nothing unsaved
    with pytest.raises(ContentError):
        content.streaming(FakeStream())  # type: ignore[arg-type]
    content.created(await buffer())
    with pytest.raises(ContentError):
        content.created(await buffer())  # not twice
    with pytest.raises(ContentError):
        content.filled(await buffer())  # a second buffer
    with pytest.raises(ContentError):
        content.close_buffer()  # unsaved: the buffer holds what the bucket does not
    content.begin_upload()
    with pytest.raises(ContentError):
        content.discard()  # the upload holds the inode's lock: nothing discards meanwhile
    with pytest.raises(ContentError):
        content.written()  # nor writes
    content.failed(kept=False)
    content.streaming(FakeStream())  # type: ignore[arg-type]
    with pytest.raises(ContentError):
        content.close()  # a stream still reads the buffer
    assert state(content) is S.STREAMING  # a refused transition changes nothing
