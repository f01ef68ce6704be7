"""The retry policy: one place decides what is retried, how often, and how long to wait.

Invariants:
- Only temporary failures are retried: 5xx, 429, SlowDown, RequestTimeout, and transport
  errors (connect, timeout, reset). 4xx answers are final.
- Waits grow exponentially with full jitter and are capped by ``max_delay``; a Retry-After is
  honoured even above ``max_delay``; no wait takes the request past ``total_timeout`` from its
  first attempt: a backoff that would is cut short, so the last attempt comes at the end of the
  budget (a request is retried for all of it); a Retry-After that would makes it give up.
"""

from __future__ import annotations

import datetime
import email.utils
import math
import random
import time
from dataclasses import dataclass, field

from .errors import (
    RequestTimeout,
    S3fmError,
    S3ResponseError,
    S3ServerError,
    S3TransportError,
    TooManyRequests,
)

#: Server errors (5xx) that say the request can never succeed there.
NOT_TEMPORARY = (501, 505)


@dataclass(frozen=True)
class RetryPolicy:
    """How a replayable request is retried.

    ``max_attempts`` counts the first try; ``total_timeout`` bounds attempts plus waits.
    """

    max_attempts: int = 6
    base_delay: float = 0.1
    max_delay: float = 8.0
    total_timeout: float = 120.0
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    @classmethod
    def never(cls) -> RetryPolicy:
        """A policy that tries once."""
        return cls(max_attempts=1)

    def is_retryable(self, exc: BaseException) -> bool:
        """Whether a failure is temporary."""
        if isinstance(exc, S3TransportError):
            return True
        if isinstance(exc, S3ServerError) and exc.status in NOT_TEMPORARY:
            return False  # 501 NotImplemented: asking again gets the same answer
        if isinstance(exc, S3ServerError | TooManyRequests | RequestTimeout):
            return True
        return isinstance(exc, S3ResponseError) and exc.status in (429, 500, 502, 503, 504)

    def delay(self, attempt: int, exc: S3fmError | None = None) -> float:
        """Seconds to wait before attempt number ``attempt + 1`` (``attempt`` starts at 1)."""
        ceiling = min(self.max_delay, self.base_delay * (2 ** (attempt - 1)))
        wait = self.rng.uniform(0, ceiling)
        retry_after = _retry_after(exc)
        if retry_after is not None:
            # The server's wish wins over max_delay (retrying sooner only earns another 503);
            # ``next_wait`` gives up when it would pass total_timeout.
            wait = max(wait, retry_after)
        return wait

    def next_wait(self, attempt: int, exc: S3fmError | None, left: float) -> float | None:
        """Seconds to wait before attempt ``attempt + 1`` with ``left`` seconds of the budget
        remaining; None: give up. Our own backoff is cut to what is left; a Retry-After
        beyond it is not (retrying sooner than asked only earns another refusal)."""
        wait = self.delay(attempt, exc)
        if wait <= left:
            return wait
        retry_after = _retry_after(exc)
        if left <= 0 or (retry_after is not None and retry_after > left):
            return None
        return left


def _retry_after(exc: S3fmError | None) -> float | None:
    """The Retry-After header of an error answer, in seconds (delta or HTTP date)."""
    if not isinstance(exc, S3ResponseError):
        return None
    value = exc.headers.get("retry-after", "").strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000" dates come back naive; HTTP dates are always UTC
        when = when.replace(tzinfo=datetime.UTC)
    return max(0.0, when.timestamp() - time.time())
