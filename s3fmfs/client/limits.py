"""S3's protocol limits, in one place for every layer.

Invariants: these are facts of the S3 API (as AWS documents them), not tunables; a module that
needs one imports it from here rather than defining its own. The filesystem's errno checks on
them live in ``s3fmfs.fs.limits``.
"""

from __future__ import annotations

#: S3's longest key, in bytes of UTF-8.
KEY_MAX = 1024
#: S3's largest object.
MAX_OBJECT_SIZE = 5 << 40
#: Parts of one multipart upload.
MAX_PARTS = 10_000
#: Smallest part of a multipart upload (the last one excepted).
MIN_PART_SIZE = 5 << 20
#: Largest part of a multipart upload.
MAX_PART_SIZE = 5 << 30
#: Longest validity of a Signature V4 presigned URL (7 days).
MAX_PRESIGN_EXPIRES = 7 * 24 * 3600
