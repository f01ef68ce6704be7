"""``RequestStats``: what a connection sent since it was made, for ``s3fmfs status``.

Invariants:
- Every attempt the engine sends is counted once, by kind (:func:`kind_of`), when its answer
  (or its failure) is known; an attempt that fails is also counted under ``errors``, by HTTP
  status (``"404"``) or by the transport error's class (``"S3ConnectError"``). A retry
  (another attempt of the same request after a failure) is counted under ``retries``.
- Counting never raises and never awaits: the engine calls it on the trio thread.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

from ._encoding import Query


def kind_of(method: str, key: str, query: Query, headers: Mapping[str, str]) -> str:
    """A request's kind as a person reads it: ``GET range``, ``LIST``, ``PUT part``, ``COPY``…
    (``headers`` lower-cased, as the engine holds them)."""
    names = {name for name, _ in query}
    if method == "GET":
        if "uploads" in names:
            return "LIST uploads"
        if not key and ("list-type" in names or "prefix" in names or "delimiter" in names):
            return "LIST"
        if not key and not names:
            return "LIST"
        return "GET range" if "range" in headers else "GET"
    if method == "PUT":
        copy = "x-amz-copy-source" in headers
        if "partNumber" in names:
            return "COPY part" if copy else "PUT part"
        return "COPY" if copy else "PUT"
    if method == "POST":
        if "uploads" in names:
            return "POST create upload"
        if "uploadId" in names:
            return "POST complete upload"
        if "delete" in names:
            return "POST delete"
        return "POST"
    if method == "DELETE" and "uploadId" in names:
        return "DELETE upload"
    return method


class RequestStats:
    """Counts of a connection's requests (attempts) by kind, its errors and its retries."""

    def __init__(self) -> None:
        self.requests: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.retries = 0

    def sent(
        self,
        method: str,
        key: str,
        query: Query,
        headers: Mapping[str, str],
        error: str = "",
    ) -> None:
        """One attempt answered (``error``: its status or error class when it failed)."""
        self.requests[kind_of(method, key, query, headers)] += 1
        if error:
            self.errors[error] += 1

    def retried(self) -> None:
        self.retries += 1

    @property
    def total(self) -> int:
        return sum(self.requests.values())

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready copy."""
        return {
            "total": self.total,
            "by_kind": dict(sorted(self.requests.items())),
            "errors": dict(sorted(self.errors.items())),
            "retries": self.retries,
        }
