"""The programs: ``s3fmfs`` (mount, ``ls``, ``presign``, ``demo``) and ``mount.s3fmfs``.

Modules::

    cli           the s3fmfs command: the mount form and the dispatch of subcommands
    common        parsers that fail in one line, the options' help, credentials for commands
    checks        what is checked before forking (mountpoint, /dev/fuse, cache directory)
    ls, presign   the client subcommands
    demo          s3fmfs demo: a sample bucket on a local moto server, mounted
    demo_server   the moto server launcher (the demo's, and the tests')
    mount_helper  mount.s3fmfs, run by mount(8) for fstab entries of type s3fmfs

Layering: the top; nothing of s3fmfs imports it.
"""
