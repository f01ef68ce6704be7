"""The mount's lifecycle as a process: serve a mount, run as a daemon, talk to systemd, log.

Modules::

    mount     connect, check the bucket, mount, serve, stop without losing data
    keep      what a mount keeps on disk (metadata cache, upload journal, recovery folder)
    daemon    the double fork, and the pipe the parent waits on until the mount is live
    sdnotify  READY=1 / STOPPING=1 to systemd (Type=notify)
    logs      stderr, syslog or a file

Layering: may import ``s3fmfs.config``, ``s3fmfs.fs`` and ``s3fmfs.client``; only
``s3fmfs.commands`` imports it.
"""
