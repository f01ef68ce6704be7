"""``mount.s3fmfs``: the helper mount(8) runs for ``mount -t s3fmfs`` and fstab type ``s3fmfs``.

mount(8) (util-linux/libmount) looks for ``/sbin/mount.<type>`` (only there: its search path is
``/sbin:/sbin/fs.d:/sbin/fs``, not ``$PATH``) and runs it with a fixed ``PATH``
(``/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin``) as::

    mount.s3fmfs SPEC DIR [-s] [-f] [-n] [-v] [-o OPTIONS] [-t TYPE]

Invariants:
- The filesystem is started with ``s3fmfs SPEC DIR -o OPTIONS`` *without* ``-f``: s3fmfs's
  daemon mode returns once the mount is live, so ``mount`` does too, with s3fmfs's exit status.
  The helper replaces itself with that command (``exec``): no extra process stays around.
- mount(8)'s flags are mount(8)'s, never s3fmfs's: ``-f`` is *fake* (do everything but mount:
  nothing is started, exit 0), ``-n`` (no mtab) is meaningless here, ``-v`` prints the command
  on stderr, ``-s`` (sloppy) drops options s3fmfs does not know instead of failing, and ``-t``
  (the type, ``s3fmfs`` or ``fuse.s3fmfs``) is only checked.
- Options only fstab, mount(8) or systemd care about (the option table's ``FSTAB_ONLY``:
  ``_netdev``, ``nofail``, ``noauto``, ``user``, ``defaults``, ``nosuid``..., ``x-*``,
  ``comment=``), and ``rw`` (libmount adds it; it is s3fmfs's default) are removed before
  s3fmfs sees them; all others are passed on unchanged and in order (s3fmfs validates them).
- s3fmfs is the console script next to this helper's interpreter (the same installation), else
  ``python -m s3fmfs.commands.cli`` with the same interpreter: never whatever ``s3fmfs`` is on PATH.
- A malformed command line is one line on stderr (naming the mount point when the command line
  has one, so ``mount -a`` shows which fstab line failed) and exit status 1 (mount(8)'s
  "incorrect invocation"), never a traceback.
- ``-h``/``--help`` prints the usage and s3fmfs's options; ``-V``/``--version`` the version;
  both exit 0 (only as the first argument: mount(8) never passes them).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .. import __version__
from ..config.options import OPTIONS
from ..config.s3fs_compat import S3FS_ONLY
from ..config.table import is_fstab_only

PROG = "mount.s3fmfs"
TYPES = frozenset({"s3fmfs", "fuse.s3fmfs"})

#: Dropped besides the fstab-only options: mount(8) passes ``rw`` unless the entry says ``ro``.
DROPPED = frozenset({"rw"})

USAGE = f"usage: {PROG} BUCKET[:/PREFIX] MOUNTPOINT [-sfnv] [-o OPTIONS] [-t TYPE]"


class UsageError(ValueError):
    """A command line mount(8) would not have built; ``str()`` is one line."""


@dataclass
class HelperArgs:
    """What mount(8) asked for."""

    source: str
    mountpoint: str
    options: list[str] = field(default_factory=list)
    fake: bool = False
    sloppy: bool = False
    verbose: bool = False
    fstype: str | None = None


def parse_args(argv: list[str]) -> HelperArgs:
    """mount(8)'s helper command line (without the program name) → :class:`HelperArgs`."""
    positional: list[str] = []
    options: list[str] = []
    flags: set[str] = set()
    fstype: str | None = None
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in ("-o", "-t"):
            if i + 1 == len(argv):
                raise UsageError(f"option {arg} needs a value")
            if arg == "-o":
                options.append(argv[i + 1])
            else:
                fstype = argv[i + 1]
            i += 2
            continue
        if arg.startswith("-o") and len(arg) > 2:
            options.append(arg[2:])
        elif arg.startswith("-t") and len(arg) > 2:
            fstype = arg[2:]
        elif arg.startswith("-") and len(arg) > 1:
            for letter in arg[1:]:
                if letter not in "sfnv":
                    raise UsageError(f"unknown flag -{letter}")
                flags.add(letter)
        else:
            positional.append(arg)
        i += 1
    if len(positional) != 2:
        raise UsageError(f"expected SPEC and DIR, got {len(positional)} argument(s)")
    if fstype is not None and fstype not in TYPES:
        raise UsageError(f"filesystem type {fstype!r} is not s3fmfs")
    return HelperArgs(
        source=positional[0],
        mountpoint=positional[1],
        options=options,
        fake="f" in flags,
        sloppy="s" in flags,
        verbose="v" in flags,
        fstype=fstype,
    )


def is_mount_only(option: str) -> bool:
    """Whether ``option`` (``name`` or ``name=value``) is for mount(8)/systemd, not s3fmfs."""
    return is_fstab_only(option) or option.partition("=")[0] in DROPPED


def known_to_s3fmfs(option: str) -> bool:
    """Whether s3fmfs's option parser knows the option's name (for sloppy mounts): its own
    options, their aliases (s3fs's spellings) and the s3fs options it accepts."""
    name = option.partition("=")[0]
    return name in OPTIONS or name in S3FS_ONLY


def filesystem_options(groups: list[str], *, sloppy: bool = False) -> str:
    """The ``-o`` string for s3fmfs: mount-only options removed (and unknown ones if sloppy)."""
    kept = []
    for group in groups:
        for item in group.split(","):
            item = item.strip()
            if not item or is_mount_only(item):
                continue
            if sloppy and not known_to_s3fmfs(item):
                continue
            kept.append(item)
    return ",".join(kept)


def s3fmfs_command() -> list[str]:
    """How to run s3fmfs from this installation."""
    script = Path(sys.executable).parent / "s3fmfs"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-m", "s3fmfs.commands.cli"]


def build_command(args: HelperArgs) -> list[str]:
    """The s3fmfs command line (daemon mode: no ``-f``) for what mount(8) asked."""
    command = [*s3fmfs_command(), args.source, args.mountpoint]
    options = filesystem_options(args.options, sloppy=args.sloppy)
    if options:
        command += ["-o", options]
    return command


HELP = f"""\
{USAGE}

Run by mount(8) for `mount -t s3fmfs` and fstab lines of type s3fmfs (or fuse.s3fmfs, through
mount.fuse3), e.g. in /etc/fstab:
  my-bucket  /mnt/b  s3fmfs  _netdev,nofail,passwd_file=/etc/passwd-s3fmfs,allow_other  0 0
It runs `s3fmfs BUCKET[:/PREFIX] DIR -o OPTIONS` (s3://BUCKET/PREFIX works too), which returns
once the mount is live. Flags are mount(8)'s: -f fake (mount nothing), -v verbose (print the
command), -s sloppy (drop options s3fmfs does not know), -n ignored, -t TYPE checked.
Options only fstab, mount(8) or systemd use (_netdev, nofail, noauto, x-*, ...) are dropped.
"""


def _mountpoint_in(argv: list[str]) -> str | None:
    """The second positional argument of a command line that could not be parsed, if any."""
    positional = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg in ("-o", "-t"):
            skip = True
        elif not arg.startswith("-") or arg == "-":
            positional.append(arg)
    return positional[1] if len(positional) > 1 else None


def _print_help() -> None:
    from .common import CREDENTIALS_HELP, options_help  # only for --help: a lighter start else

    print(f"{HELP}\n{options_help()}\n\n{CREDENTIALS_HELP}")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``mount.s3fmfs`` console script; execs s3fmfs unless faking."""
    arguments = sys.argv[1:] if argv is None else argv
    if arguments[:1] in (["-h"], ["--help"]):
        _print_help()
        return 0
    if arguments[:1] in (["-V"], ["--version"]):
        print(f"{PROG} (s3fmfs {__version__})")
        return 0
    try:
        args = parse_args(arguments)
    except UsageError as exc:
        where = _mountpoint_in(arguments)
        print(f"{PROG}: {f'{where}: ' if where else ''}{exc}\n{USAGE}", file=sys.stderr)
        return 1
    command = build_command(args)
    if args.verbose:
        print(f"{PROG}: {' '.join(command)}", file=sys.stderr)
    if args.fake:
        return 0
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execv(command[0], command)
    except OSError as exc:
        print(f"{PROG}: cannot run {command[0]}: {exc}", file=sys.stderr)
        return 1
    return 0  # pragma: no cover - execv does not return


if __name__ == "__main__":
    sys.exit(main())
