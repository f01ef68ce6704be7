"""systemd's readiness protocol (``sd_notify(3)``) without libsystemd.

Invariants:
- :func:`notify` sends one datagram to the ``AF_UNIX`` socket named by ``$NOTIFY_SOCKET``: a
  path (``/run/systemd/notify``) or an abstract name (``@name``, sent with a leading NUL byte).
- It never raises: no ``NOTIFY_SOCKET`` (not started by systemd, or ``Type=`` is not
  ``notify``) returns False at once; a socket that is gone, refuses, or is not ``AF_UNIX`` is
  logged at debug level and returns False. True means the datagram was handed to the kernel.
- The environment is left as it is (``NOTIFY_SOCKET`` is not unset), so the same process can
  send ``READY=1`` and later ``STOPPING=1``.

Typical states: ``READY=1`` once the mount is live, ``STOPPING=1`` when unmounting starts,
``STATUS=...`` for a free-form line shown by ``systemctl status``.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger("s3fmfs.sdnotify")

#: How long a send may block (the manager's socket buffer being full); systemd reads promptly.
SEND_TIMEOUT = 5.0


def _address(value: str) -> str | bytes | None:
    """``$NOTIFY_SOCKET`` → a ``sendto`` address; None when it cannot be an AF_UNIX socket."""
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    return None  # e.g. "vsock:..." (systemd ≥ 253 in VMs): not supported here


def notify(state: str) -> bool:
    """Send ``state`` (e.g. ``"READY=1"``, newline-separated assignments) to systemd.

    Returns True when sent, False when there is no notify socket or sending failed.
    """
    value = os.environ.get("NOTIFY_SOCKET", "")
    if not value:
        return False
    address = _address(value)
    if address is None:
        log.debug("NOTIFY_SOCKET=%r is not an AF_UNIX socket: %s not sent", value, state)
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.settimeout(SEND_TIMEOUT)
            sock.sendto(state.encode(), address)
    except (OSError, ValueError) as exc:
        log.debug("cannot notify %r of %s: %s", value, state, exc)
        return False
    return True
