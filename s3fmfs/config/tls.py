"""TLS for https endpoints: what the client verifies, and how a failure reads.

Invariants:
- Certificates are verified by default (httpx's default: the certifi bundle, or
  ``$SSL_CERT_FILE``/``$SSL_CERT_DIR``); ``ca_bundle=`` replaces those trusted authorities with
  a PEM file (or an OpenSSL hashed directory); only ``no_check_certificate`` turns
  verification off, and a mount that does so logs a warning saying so.
- A CA bundle that cannot be loaded is a usage error found before forking (``check_ca_bundle``).
- A certificate the client refuses makes the mount fail with one line naming the certificate
  and both options (``describe_tls_failure``), never a traceback.
"""

from __future__ import annotations

import logging
import os
import ssl

from .options import MountOptions

log = logging.getLogger("s3fmfs")


def verify_setting(opts: MountOptions) -> bool | str:
    """What the client's ``verify`` gets: a CA bundle path, or whether to verify at all."""
    if opts.ca_bundle:
        return opts.ca_bundle
    return not opts.no_check_certificate


def warn_if_unverified(opts: MountOptions) -> None:
    """The warning an unverified https endpoint is worth (nothing for http or verified)."""
    if opts.no_check_certificate and opts.endpoint_parts[0]:
        log.warning(
            "TLS certificate verification is OFF for %s (no_check_certificate): anyone on the "
            "network path can impersonate the endpoint and see or change the data",
            opts.endpoint,
        )


def check_ca_bundle(path: str) -> str | None:
    """Why ``path`` cannot serve as the trusted authorities (one line), or None."""
    try:
        if os.path.isdir(path):
            ssl.create_default_context(capath=path)
        else:
            ssl.create_default_context(cafile=path)
    except ssl.SSLError as exc:
        return f"ca_bundle {path}: no usable certificate in it ({exc.reason or exc})"
    except OSError as exc:
        return f"ca_bundle {path}: {exc.strerror or exc}"
    return None


def describe_tls_failure(exc: BaseException, endpoint: str) -> str | None:
    """One line for a refused server certificate (an ``ssl.SSLCertVerificationError``
    anywhere along ``exc``'s causes), or None when ``exc`` is not that."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ssl.SSLCertVerificationError):
            reason = current.verify_message or "certificate verify failed"
            return (
                f"TLS certificate of {endpoint} not trusted ({reason}): give its CA with "
                "-o ca_bundle=FILE, or -o no_check_certificate to skip the check (insecure)"
            )
        current = current.__cause__ or current.__context__
    return None
