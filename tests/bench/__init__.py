"""``make bench``: s3fmfs against a raw client and the peers (s3fs-fuse, rclone mount) on s3rver.

Run ``python -m tests.bench.run`` from the repository root (``make bench`` does, after
``make deps``; ``make bench PEERS=1`` installs Debian's ``s3fs`` and ``rclone`` first).

Invariants:
- One s3rver (``tests.support.servers.s3rver``, with ``NODE_OPTIONS=--openssl-legacy-provider``) per
  run, on a port it picks, seeded once (:mod:`tests.bench.data`): a big object, a folder of
  many small objects, and a source-tree-like set of small text files (also kept as a tarball).
- Every measurement of a mounted system gets a fresh mount (:mod:`tests.bench.systems`) and
  dropped page/dentry/inode caches (``echo 3 > /proc/sys/vm/drop_caches``, root only: when it
  cannot, the report says so); the raw baseline (:mod:`tests.bench.raw`) gets dropped caches
  and a fresh connection. Runs of the systems are interleaved and each cell is a median.
- Every measurement checks what it did (:mod:`tests.bench.checks`): sizes, counts and sampled
  bytes; a failed check fails that measurement. A failure of s3fmfs or raw makes the run exit
  1; a peer's failure is shown in its cell (``failed``) with a note and the run goes on.
- The daemon's peak RSS is its ``VmHWM``, sampled from ``/proc/PID/status`` until it exits.
- Nothing is left behind: mounts are unmounted (``fusermount3 -u``, then ``umount -l``), their
  processes waited for (then killed), s3rver stopped and temporary files removed, whatever
  happens (``try``/``finally``; child processes also get ``PR_SET_PDEATHSIG``).
"""
