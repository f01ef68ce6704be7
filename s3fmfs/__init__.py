"""s3fmfs: a bucket of S3for.me or any S3-compatible service as a directory."""

__version__ = "0.1.0"
