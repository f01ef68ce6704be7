"""What a signer sees of a request: plain values, no I/O, no clock.

Invariants: ``path`` is exactly the encoded path sent on the wire; ``query`` holds decoded pairs
in the order sent (``None`` value = bare flag); ``headers`` has lower-case names.
``Credentials`` without an access key id are anonymous: the signers add nothing (no
``Authorization``, no ``x-amz-*``), so the request goes unsigned.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from ._encoding import Query


@dataclass(frozen=True)
class Credentials:
    """An access key pair, with the session token of temporary credentials."""

    access_key_id: str
    secret_access_key: str
    session_token: str | None = None

    @property
    def anonymous(self) -> bool:
        """No key: requests go unsigned (a public bucket)."""
        return not self.access_key_id

    def __repr__(self) -> str:  # never show the secret
        return f"Credentials(access_key_id={self.access_key_id!r}, secret_access_key='***')"


@dataclass(frozen=True)
class SigningRequest:
    """A request as a signer needs it.

    ``bucket`` is the bucket when it travels in the host name (virtual-hosted or vanity
    style) and "" when it is already the first segment of ``path`` (path style): V2 puts it
    in front of the canonical resource.
    """

    method: str
    host: str
    path: str
    query: Query = ()
    headers: Mapping[str, str] = field(default_factory=dict)
    bucket: str = ""
