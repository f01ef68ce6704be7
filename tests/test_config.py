"""The option table (``s3fmfs.config``): one declaration per option drives the parser, the
dataclass defaults, ``--help``, the fstab-only list of ``mount.s3fmfs`` and
``docs/CONFIGURATION.md``. Fast: no server, no mount."""

from __future__ import annotations

import ast
import dataclasses
import re
from pathlib import Path

import pytest

from s3fmfs.commands import mount_helper
from s3fmfs.commands.common import options_help
from s3fmfs.config import docs, paths
from s3fmfs.config.options import DECLARED, OPTIONS, MountOptions, OptionError, parse_options
from s3fmfs.config.table import FSTAB_ONLY, Option, index

ROOT = Path(__file__).resolve().parent.parent


def test_committed_configuration_page_is_generated_from_the_table() -> None:
    committed = (ROOT / "docs" / "CONFIGURATION.md").read_text()
    assert committed == docs.render(), "run `make docs` (python -m s3fmfs.config.docs)"


def test_every_field_is_set_by_an_option_and_defaults_come_from_the_dataclass() -> None:
    fields = {f.name: f.default for f in dataclasses.fields(MountOptions) if f.metadata}
    assert {opt.field for opt in DECLARED} == set(fields)
    for opt in DECLARED:
        assert opt.default == fields[opt.field]
        assert OPTIONS[opt.name] is opt
        assert "(default" not in opt.help, f"{opt.name}: the default is shown from the table"
    defaults = MountOptions()
    assert parse_options([]) == defaults
    assert (defaults.endpoint, defaults.default_umask, defaults.part_size_mb) == (
        "https://rest.s3for.me",
        0o022,
        8,
    )


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("uid=x", "uid must be a number, not 'x'"),
        ("uid=4294967296", "uid out of range: '4294967296'"),
        ("umask=9", "umask must be an octal number, not '9'"),
        ("umask=17777", "umask out of range: '17777'"),
        ("stat_ttl=soon", "stat_ttl must be a number of seconds, not 'soon'"),
        ("stat_ttl=-1", "stat_ttl out of range: '-1'"),
        ("timeout=0", "timeout must be more than 0 seconds, not '0'"),
        ("part_size_mb=0", "part_size_mb must be between 1 and 5120, not '0'"),
        ("read_concurrency=2.5", "read_concurrency must be a whole number, not '2.5'"),
        ("metacache=maybe", "metacache must be on or off, not 'maybe'"),
        ("metacache_file=m.db", "metacache_file must be an absolute path, not 'm.db'"),
        ("endpoint=ftp://x", "endpoint must be http(s)://host[:port], not 'ftp://x'"),
        ("ro=1", "option 'ro' takes no value"),
        ("nofail=1", "option 'nofail' takes no value"),
        ("region", "option 'region' needs a value (region=...)"),
        ("frobnicate", "unknown option 'frobnicate'"),
    ],
)
def test_bad_values_are_one_line(item: str, message: str) -> None:
    with pytest.raises(OptionError) as caught:
        parse_options([item])
    assert str(caught.value) == message


def test_each_kind_parses() -> None:
    opts = parse_options(
        ["uid=7,umask=027,stat_ttl=1.5,part_size_mb=16,metacache=NO,sigv2,virtual_host,rw"]
    )
    assert (opts.uid, opts.umask, opts.stat_ttl, opts.part_size_mb) == (7, 0o027, 1.5, 16)
    assert opts.metacache is False and opts.signature == "v2" and opts.path_style is False
    assert parse_options(["ro"]).ro and not parse_options(["ro,rw"]).ro
    assert parse_options(["x-systemd.automount,comment=a=b,_netdev"]) == MountOptions()


def test_aliases_name_the_same_option() -> None:
    opt = Option("url", "str", "an s3fs-fuse name", aliases=("endpoint_url",))
    by_name = index([opt])
    assert by_name["url"] is by_name["endpoint_url"] is opt
    with pytest.raises(TypeError):
        index([opt, Option("url", "flag", "twice")])
    with pytest.raises(TypeError):
        index([Option("nofail", "flag", "an fstab-only name")])


def test_help_has_aligned_columns() -> None:
    lines = options_help().splitlines()[1:]
    starts = {m.start(2) for line in lines if (m := re.match(r"  (\S+) +(\S)", line))}
    assert len(starts) == 1, starts  # every help text starts in one column
    column = starts.pop()
    for line in lines:
        assert len(line) <= 100
        assert line.startswith("  ") and (line[2] != " " or line[:column].isspace())
    text = options_help()
    for opt in DECLARED:
        assert f"  {opt.label} " in text
    assert "no_check_certificatedo" not in text


def test_mount_helper_drops_the_tables_fstab_only_options() -> None:
    for name in FSTAB_ONLY:
        assert mount_helper.is_mount_only(name)
    assert mount_helper.is_mount_only("x-systemd.requires=a.service")
    assert mount_helper.is_mount_only("comment=x")
    assert mount_helper.is_mount_only("rw")  # libmount's own
    for name in OPTIONS:
        assert not mount_helper.is_mount_only(name) or name == "rw"
        assert mount_helper.known_to_s3fmfs(f"{name}=1")


def test_one_cache_directory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert paths.cache_dir() == tmp_path / "xdg" / "s3fmfs"
    assert paths.cache_dir("/c") == Path("/c")
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert paths.cache_dir() == tmp_path / ".cache" / "s3fmfs"
    opts = MountOptions(cache_dir="/c", endpoint="http://127.0.0.1:9000")
    assert paths.metacache_file(opts) == Path("/c/metadata.sqlite3")
    assert paths.endpoint_id(opts) == "http://127.0.0.1:9000"
    assert paths.endpoint_id(MountOptions()) == "https://rest.s3for.me:443"


def _imports(path: Path) -> set[str]:
    """The s3fmfs modules ``path`` imports (absolute names)."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    if path.name == "__init__.py":
        package = ".".join(path.relative_to(ROOT).parts[:-1])
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")
            if node.level:
                base = base[: len(base) - node.level + 1]
                name = ".".join([*base, node.module] if node.module else base)
            else:
                name = node.module or ""
            found |= {name} | {f"{name}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return {name for name in found if name == "s3fmfs" or name.startswith("s3fmfs.")}


@pytest.mark.parametrize(
    ("layer", "allowed"),
    [
        ("client", ("s3fmfs.client",)),
        ("fs", ("s3fmfs.fs", "s3fmfs.client")),
        ("config", ("s3fmfs.config", "s3fmfs.fs", "s3fmfs.client")),
        ("service", ("s3fmfs.service", "s3fmfs.config", "s3fmfs.fs", "s3fmfs.client")),
    ],
)
def test_layers_import_only_the_layers_below(layer: str, allowed: tuple[str, ...]) -> None:
    for path in sorted((ROOT / "s3fmfs" / layer).rglob("*.py")):
        for name in _imports(path):
            if name in ("s3fmfs", "s3fmfs.__version__"):
                continue
            assert name.startswith(allowed), f"{path.relative_to(ROOT)} imports {name}"


#: ``**`name=`** (default 16)``, ``**`name=`** (seconds, default 5; …)``, ``…`name=` (default 60)``.
PROSE_DEFAULT = re.compile(r"`(\w+)=`(?:\*\*)? \((?:[a-z]+, )?default ([^;),]+)")


def test_defaults_named_in_prose_are_the_tables() -> None:
    """Reference text may repeat a default; then it must be the table's (one source of truth)."""
    found = []
    for page in (ROOT / "docs").glob("*.md"):
        for name, said in PROSE_DEFAULT.findall(page.read_text()):
            if name in OPTIONS and OPTIONS[name].default_text is None:  # not computed in words
                found.append(name)
                assert said == OPTIONS[name].shown_default, f"{page.name}: {name}= default {said}"
    assert len(found) >= 8  # the pattern still finds what the pages say
