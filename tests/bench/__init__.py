"""``make bench``: s3fmfs against a raw client and the peers (s3fs-fuse, rclone mount) on s3rver.

Run ``python -m tests.bench.run`` from the repository root (``make bench`` does, after
``make deps``; ``make bench PEERS=1`` installs Debian's ``s3fs`` and ``rclone`` first).

Invariants:
- One s3rver per run (:mod:`tests.bench.counting`: s3rver 3.x through a node wrapper, with
  ``NODE_OPTIONS=--openssl-legacy-provider``) on ports it picks, seeded once, directly
  (:mod:`tests.bench.data`): a big object, a folder of many small objects, and a
  source-tree-like set of small text files (also kept as a tarball). It counts the requests
  the measured systems make on their port, by kind; the bench's own requests (seeding, checks,
  polls) go to a second, uncounted port.
- One table per latency mode (``BENCH_LATENCY_MS``): 0 = the systems connect to s3rver on
  loopback; N = every measured system (raw, s3fmfs, peers) connects through one
  :mod:`tests.support.latency_proxy` process N ms away each way.
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
