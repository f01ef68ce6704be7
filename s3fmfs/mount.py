"""The mount's lifecycle: connect, check the bucket, mount, serve, and stop cleanly.

Invariants:
- One order, always: connection → store → core → adapter → ``pyfuse3.init`` → ``main``.
- SIGINT/SIGTERM call ``pyfuse3.terminate()`` (through trio's signal handling, on the trio
  thread); when ``main`` returns for any reason, every dirty file is uploaded before
  ``pyfuse3.close(unmount=True)``, shielded from cancellation.
- Errors before mounting are one log line and exit status 1; a clean stop is 0, and 1 when
  some file could not be uploaded at the end (each logged with its path).
"""

from __future__ import annotations

import logging
import signal
from dataclasses import dataclass

import pyfuse3
import trio

from .client import CallingFormat, S3fmAuthConnection
from .fs.adapter import S3fmOperations
from .fs.core import FsCore
from .fs.options import MountOptions
from .fs.s3store import S3Store

log = logging.getLogger("s3fmfs")


@dataclass
class MountConfig:
    """What a mount needs beyond its options."""

    bucket: str
    prefix: str
    mountpoint: str
    options: MountOptions
    access_key_id: str
    secret_access_key: str
    session_token: str | None = None


def build_connection(config: MountConfig) -> S3fmAuthConnection:
    """The signed client for the endpoint, addressing style and signature chosen."""
    opts = config.options
    secure, host, port = opts.endpoint_parts
    calling = CallingFormat.PATH if opts.use_path_style else CallingFormat.SUBDOMAIN
    return S3fmAuthConnection(
        config.access_key_id,
        config.secret_access_key,
        secure,
        host,
        port,
        calling,
        signature=opts.signature,
        region=opts.region,
        session_token=config.session_token,
    )


def fuse_options(opts: MountOptions) -> set[str]:
    """libfuse mount options: name and type for mtab/df, kernel permission checks."""
    result = set(pyfuse3.default_options)  # default_permissions
    result |= {"fsname=s3fmfs", "subtype=s3fmfs", "default_permissions"}
    if opts.ro:
        result.add("ro")
    if opts.allow_other:
        result.add("allow_other")
    return result


async def _terminate_on_signal(
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        task_status.started()
        async for signum in signals:
            log.info("%s: unmounting", signal.Signals(signum).name)
            pyfuse3.terminate()
            return


async def serve(config: MountConfig) -> int:
    """Mount and serve until unmounted or signalled; the exit status."""
    async with build_connection(config) as conn:
        store = S3Store(conn, config.bucket)
        try:
            await store.check_bucket()
        except Exception as exc:
            log.error("cannot use bucket %r: %s", config.bucket, exc)
            return 1
        core = FsCore(store, config.options, prefix=config.prefix)
        ops = S3fmOperations(core)
        try:
            pyfuse3.init(ops, config.mountpoint, fuse_options(config.options))
        except Exception as exc:
            log.error("cannot mount on %s: %s", config.mountpoint, exc)
            return 1
        log.info(
            "mounted %s%s on %s",
            config.bucket,
            f":/{config.prefix}" if config.prefix else "",
            config.mountpoint,
        )
        failed = 0
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(_terminate_on_signal)
                await pyfuse3.main()
                nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                failed = await core.flush_all()
                if failed:
                    log.error("%d file(s) could not be uploaded before unmounting", failed)
                await core.destroy()
                pyfuse3.close(unmount=True)
                log.info("unmounted %s", config.mountpoint)
        return 1 if failed else 0


def run(config: MountConfig) -> int:
    """Run ``serve`` under trio (in the foreground)."""
    return trio.run(serve, config)
