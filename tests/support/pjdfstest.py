"""pjdfstest, the POSIX filesystem test suite: built from the archive kept beside the clone
(``../shared/third_party``), run with ``prove`` on a mounted directory, its cases counted.

Invariants:
- ``build`` unpacks and compiles into the directory it is given, once (a ``pjdfstest``
  binary there is reused); a failed step raises with the end of its output.
- ``run`` counts CASES, not files: each "ok N" / "not ok N" TAP line of ``prove -v``; cases a
  file planned ("1..N") but never reported (it died) count as failed. Suites run two at a
  time, each ``prove`` from its own directory on the mount (pjdfstest makes its files in the
  current directory).
- Nothing here knows s3fmfs: callers mount and unmount.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tarfile
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
NAME = "pjdfstest-85a8aea.tar.gz"


def _archive() -> Path:
    """Where the CI keeps third-party sources: ``../shared`` beside the clone (for a git
    worktree, beside its main checkout too)."""
    beside = [REPO.parent]
    dot_git = REPO / ".git"
    if dot_git.is_file():  # a worktree: "gitdir: MAIN/.git/worktrees/NAME"
        gitdir = Path(dot_git.read_text().partition("gitdir:")[2].strip())
        if gitdir.parent.name == "worktrees":
            beside.append(gitdir.parents[2].parent)
    for where in beside:
        found = where / "shared" / "third_party" / NAME
        if found.exists():
            return found
    return beside[0] / "shared" / "third_party" / NAME


#: The pjdfstest sources (missing: the test is skipped, saying where it looked first).
ARCHIVE = _archive()
#: What the build needs on the PATH (Debian: autoconf automake gcc; perl brings prove).
TOOLS = ("autoreconf", "automake", "gcc", "make", "prove")
#: The suites measured (issue 14): 5,981 cases.
SUITES = ("open", "mkdir", "rmdir", "unlink", "rename", "truncate")

_FILE = re.compile(r"^(\S+\.t) \.+")
_PLAN = re.compile(r"^1\.\.(\d+)")
_CASE = re.compile(r"^(not )?ok (\d+)\b(.*)")


def missing() -> str | None:
    """Why pjdfstest cannot be built here (None: it can)."""
    if not ARCHIVE.exists():
        return f"no {ARCHIVE} (the third-party archive kept beside the clone)"
    absent = [t for t in TOOLS if shutil.which(t) is None]
    if absent:
        return f"needs {', '.join(absent)} (apt install autoconf automake gcc make perl)"
    return None


def build(into: Path) -> Path:
    """The source tree with a built ``pjdfstest`` binary, under ``into``."""
    tree = into / "pjdfstest"
    if (tree / "pjdfstest").exists():
        return tree
    with tarfile.open(ARCHIVE) as archive:
        archive.extractall(into, filter="data")
    for step in (["autoreconf", "-ifs"], ["./configure"], ["make", "pjdfstest"]):
        done = subprocess.run(step, cwd=tree, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(step)} failed:\n{(done.stdout + done.stderr)[-3000:]}")
    return tree


@dataclass
class FileResult:
    """One ``.t`` file: its plan and the numbers of its failed cases, with their messages."""

    planned: int = 0
    passed: int = 0
    failed: dict[int, str] = field(default_factory=dict)

    @property
    def missing(self) -> int:
        return max(0, self.planned - self.passed - len(self.failed))


@dataclass
class Results:
    """Cases of every file run, by file (relative to the tree's ``tests``)."""

    files: dict[str, FileResult] = field(default_factory=dict)

    @property
    def passed(self) -> int:
        return sum(f.passed for f in self.files.values())

    @property
    def total(self) -> int:
        return sum(max(f.planned, f.passed + len(f.failed)) for f in self.files.values())

    @property
    def failed(self) -> int:
        return self.total - self.passed

    def by_suite(self) -> dict[str, tuple[int, int]]:
        """(passed, total) per suite."""
        out: dict[str, tuple[int, int]] = {}
        for name, f in self.files.items():
            suite = name.split("/")[0]
            passed, total = out.get(suite, (0, 0))
            out[suite] = (passed + f.passed, total + max(f.planned, f.passed + len(f.failed)))
        return out

    def report(self) -> str:
        """A summary, then every file with failures and its first few messages."""
        lines = [f"pjdfstest: {self.passed}/{self.total} cases passed"]
        for suite, (passed, total) in sorted(self.by_suite().items()):
            lines.append(f"  {suite}: {passed}/{total}")
        for name, f in sorted(self.files.items()):
            if f.failed or f.missing:
                shown = "; ".join(f"{n}{_short(m)}" for n, m in list(f.failed.items())[:3])
                extra = f" (+{f.missing} never reported)" if f.missing else ""
                lines.append(f"  FAIL {name}: {len(f.failed)}{extra}: {shown}")
        return "\n".join(lines)


def _short(message: str, keep: int = 110) -> str:
    """A failure's message cut to ``keep`` characters (pjdfstest's names are long)."""
    message = re.sub(r"pjdfstest_[0-9a-f]{32}", "N", message)  # its generated names
    message = re.sub(r"[0-9a-f]{64,}", "LONG", message)
    return message if len(message) <= keep else message[: keep - 1] + "…"


def parse(output: str, tests_dir: Path) -> Results:
    """The cases of ``prove -v`` output."""
    results = Results()
    current: FileResult | None = None
    for line in output.splitlines():
        if m := _FILE.match(line):
            path = Path(m.group(1))
            name = str(path.relative_to(tests_dir)) if path.is_absolute() else str(path)
            current = results.files.setdefault(name, FileResult())
            rest = line[m.end() :].strip()
            line = rest  # prove prints the first TAP line on the file's own line
        if current is None:
            continue
        if m := _PLAN.match(line):
            current.planned = int(m.group(1))
        elif m := _CASE.match(line):
            if m.group(1):
                current.failed[int(m.group(2))] = m.group(3)
            else:
                current.passed += 1
    return results


def run(
    tree: Path, workdir: Path, suites: Iterable[str] = SUITES, timeout: float = 3600
) -> Results:
    """Run ``suites`` from directories under ``workdir`` (on the filesystem tested), two at a
    time; every case counted."""
    tests_dir = tree / "tests"

    def one(suite: str) -> str:
        here = workdir / f"pjd-{suite}"
        here.mkdir(exist_ok=True)
        done = subprocess.run(
            ["prove", "-v", "-r", str(tests_dir / suite)],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        return done.stdout

    results = Results()
    with ThreadPoolExecutor(2) as pool:
        for output in pool.map(one, list(suites)):
            results.files.update(parse(output, tests_dir).files)
    return results
