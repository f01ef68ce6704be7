"""The async signed S3 client: python-s3's ``S3fmAuthConnection`` and
``QueryStringAuthGenerator``, on httpx under trio or asyncio, with Signature V2 and V4;
``s3fmfs.client.blocking`` has the same classes, synchronous.

Everything public is exported here; modules starting with ``_`` are private.
"""

from . import errors
from ._extended_ops import StreamingGetResponse
from ._signing_types import Credentials
from .connection import DEFAULT_SPOOL_SIZE, S3fmAuthConnection
from .errors import *  # noqa: F403 (the exception tree is part of the public API)
from .errors import __all__ as _error_names
from .models import (
    Bucket,
    CallingFormat,
    CommonPrefixEntry,
    CopyResponse,
    DeleteError,
    DeleteObjectsResponse,
    GetResponse,
    ListAllMyBucketsResponse,
    ListBucketResponse,
    ListEntry,
    ListPage,
    Location,
    LocationResponse,
    MultipartUploadInfo,
    Owner,
    Part,
    Response,
    S3Object,
)
from .presign import QueryStringAuthGenerator
from .retry import RetryPolicy

__all__ = [
    "DEFAULT_SPOOL_SIZE",
    "Bucket",
    "CallingFormat",
    "CommonPrefixEntry",
    "CopyResponse",
    "Credentials",
    "DeleteError",
    "DeleteObjectsResponse",
    "GetResponse",
    "ListAllMyBucketsResponse",
    "ListBucketResponse",
    "ListEntry",
    "ListPage",
    "Location",
    "LocationResponse",
    "MultipartUploadInfo",
    "Owner",
    "Part",
    "QueryStringAuthGenerator",
    "Response",
    "RetryPolicy",
    "S3Object",
    "S3fmAuthConnection",
    "StreamingGetResponse",
    "errors",
    *_error_names,
]
