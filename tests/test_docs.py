"""The documentation's shape: a short README that starts with the commands that work on a fresh
machine, and relative links (files and ``#anchors``) that resolve.

Invariants:
- Pure: reads README.md and docs/*.md, nothing else; no network, no subprocess.
- Anchors are checked against GitHub's heading slugs (lower case, punctuation but ``-`` and
  ``_`` removed, spaces to ``-``, ``-1``, ``-2``… for repeats), so a link that works here works
  on GitHub.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
MAX_README_LINES = 260

FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.M | re.S)
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"(?<!!)\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$", re.M)


def markdown_files() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


def without_code(text: str) -> str:
    """The text with fenced blocks and inline code removed (links there are not links)."""
    return INLINE_CODE.sub("", FENCE.sub("", text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading's text."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link: its text
    text = text.replace("`", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every anchor GitHub gives the headings of ``path``."""
    seen: dict[str, int] = {}
    found = set()
    for match in HEADING.finditer(FENCE.sub("", path.read_text(encoding="utf-8"))):
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def relative_links(path: Path) -> Iterator[str]:
    for match in LINK.finditer(without_code(path.read_text(encoding="utf-8"))):
        target = match.group(1)
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto:…
            continue
        yield target


def test_slugs_follow_github() -> None:
    assert slug("The signed client (`s3fmfs.client`)") == "the-signed-client-s3fmfsclient"
    assert slug("mount(8), fstab and systemd") == "mount8-fstab-and-systemd"
    assert slug("Quick loop: make test-quick") == "quick-loop-make-test-quick"
    assert slug("Options: `part_size_mb`") == "options-part_size_mb"


def test_readme_is_short() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_README_LINES, f"README.md has {len(lines)} lines"


def test_readme_starts_with_the_commands_of_a_fresh_machine() -> None:
    text = README.read_text(encoding="utf-8")
    first_block = FENCE.search(text)
    assert first_block is not None, "README.md has no command block"
    first_section = text.find("\n## ")
    assert first_section == -1 or first_block.start() < first_section, (
        "the first command block comes after the first section"
    )
    commands = [line.split("#")[0].strip() for line in first_block.group(0).splitlines()[1:-1]]
    assert "make demo" in commands
    assert "make test" in commands


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(path: Path) -> None:
    broken = []
    for target in relative_links(path):
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / unquote(file_part)).resolve() if file_part else path
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and unquote(anchor) not in anchors(dest):
            broken.append(f"{target}: no heading with that anchor in {dest.name}")
    assert not broken, f"{path.relative_to(ROOT)}: " + "; ".join(broken)


def test_the_docs_exist() -> None:
    for name in ("CLIENT", "DEPLOYMENT", "SEMANTICS", "RELIABILITY", "PERFORMANCE", "TESTING"):
        assert (DOCS / f"{name}.md").is_file(), name
    assert (DOCS / "CHANGELOG.md").is_file()
