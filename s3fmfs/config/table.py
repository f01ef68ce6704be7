"""The option table: how each mount option is declared, parsed, and described.

An option is declared once, as an :class:`Option` in the metadata of the ``MountOptions`` field
it sets (:func:`option`; see :mod:`s3fmfs.config.options`): its name, kind, help, range or
choices, aliases. The field's type and default are the dataclass's own. Everything else is
derived from that one declaration: the parser (:func:`Option.parse`), ``s3fmfs --help``
(:func:`help_text`), ``docs/CONFIGURATION.md`` (:mod:`s3fmfs.config.docs`) and the list of
fstab/mount(8) options (:data:`FSTAB_ONLY`) that ``mount.s3fmfs`` drops and s3fmfs ignores.

Invariants:
- Kinds: ``flag`` (no value; sets ``sets``), ``int`` (decimal, ``low``–``high``), ``id`` (a
  user or group id: decimal, 0–2³²-1), ``float`` (seconds, 0 ≤ s < 10⁹; above 0 if
  ``positive``), ``octal`` (a mode, 0–7777), ``str`` (checked by ``check`` if given), ``path``
  (absolute if ``absolute``), ``enum`` (one of ``choices``, case-insensitive, or a synonym).
- A value option with ``bare`` also takes no value (``use_sse`` means ``use_sse=1``, as in
  s3fs); ``aliases`` are other names with the same meaning and value (s3fs-fuse's spellings).
- Several flags may set one field (``sigv2``/``sigv4`` → ``signature``, ``ro``/``rw`` → ``ro``);
  a value option sets the field of its own name.
- A bad value raises ``OptionError`` with one line naming the option as the user wrote it.
- Help texts never state the default: it is shown from the field's default (or
  ``default_text`` when it is computed at mount time).
"""

from __future__ import annotations

import dataclasses
import textwrap
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Kind = Literal["flag", "int", "id", "float", "octal", "str", "path", "enum"]

_KEY = "s3fmfs.option"
_METAVARS: dict[str, str] = {
    "int": "N",
    "id": "ID",
    "float": "SECONDS",
    "octal": "MODE",
    "str": "TEXT",
    "path": "PATH",
}
SECONDS_MAX = 1e9
ID_MAX = 2**32 - 1
MODE_MAX = 0o7777


class OptionError(ValueError):
    """A bad option; ``str()`` is one line for the user."""


@dataclass(frozen=True, eq=False)
class Option:
    """One ``-o`` option (see the module's invariants)."""

    name: str
    kind: Kind
    help: str
    sets: object = True  # flag: the value it gives the field
    low: int | None = None  # int: inclusive bounds
    high: int | None = None
    positive: bool = False  # float: more than 0
    choices: Mapping[str, object] = field(default_factory=dict)  # enum: word → value
    synonyms: Mapping[str, str] = field(default_factory=dict)  # enum: other word → a choice
    absolute: bool = False  # path: must be absolute
    check: Callable[[str], object] | None = None  # str: raises OptionError when bad
    metavar: str | None = None
    default_text: str | None = None  # a default computed at mount time, in words
    aliases: tuple[str, ...] = ()  # other names (e.g. s3fs-fuse's) for the same option
    bare: str | None = None  # a value option given without a value takes this one (s3fs's)
    # Filled from the dataclass field the option is declared on:
    field: str = ""
    default: object = None
    group: str = ""

    @property
    def takes_value(self) -> bool:
        return self.kind != "flag"

    @property
    def label(self) -> str:
        """``name`` for a flag, ``name=METAVAR`` otherwise."""
        if not self.takes_value:
            return self.name
        if self.kind == "enum":
            value = self.metavar or "|".join(self.choices)
        else:
            value = self.metavar or _METAVARS[self.kind]
        return f"{self.name}[={value}]" if self.bare is not None else f"{self.name}={value}"

    def parse(self, value: str, name: str | None = None) -> object:
        """The field's value for ``value``; OptionError (one line) if malformed."""
        name = name or self.name
        if self.kind == "id":
            number = _number(int, value, f"{name} must be a number, not {value!r}")
            if not 0 <= number <= ID_MAX:
                raise OptionError(f"{name} out of range: {value!r}")
            return number
        if self.kind == "int":
            number = _number(int, value, f"{name} must be a whole number, not {value!r}")
            assert self.low is not None and self.high is not None
            if not self.low <= number <= self.high:
                raise OptionError(
                    f"{name} must be between {self.low} and {self.high}, not {value!r}"
                )
            return number
        if self.kind == "float":
            seconds = _number(float, value, f"{name} must be a number of seconds, not {value!r}")
            if not 0 <= seconds < SECONDS_MAX:
                raise OptionError(f"{name} out of range: {value!r}")
            if self.positive and seconds <= 0:
                raise OptionError(f"{name} must be more than 0 seconds, not {value!r}")
            return seconds
        if self.kind == "octal":
            try:
                mode = int(value, 8)
            except ValueError:
                raise OptionError(f"{name} must be an octal number, not {value!r}") from None
            if not 0 <= mode <= MODE_MAX:
                raise OptionError(f"{name} out of range: {value!r}")
            return mode
        if self.kind == "enum":
            word = self.synonyms.get(value.lower(), value.lower())
            if word not in self.choices:
                raise OptionError(f"{name} must be {' or '.join(self.choices)}, not {value!r}")
            return self.choices[word]
        if self.kind == "path" and self.absolute and not value.startswith("/"):
            raise OptionError(f"{name} must be an absolute path, not {value!r}")
        if self.check is not None:
            self.check(value)
        return value

    @property
    def shown_default(self) -> str | None:
        """The default in words, or None when there is nothing to say."""
        if self.default_text is not None:
            return self.default_text
        if not self.takes_value:
            return "the default" if self.sets == self.default else None
        if self.default is None:
            return None
        if self.kind == "octal":
            return f"{self.default:03o}"
        if self.kind == "enum":
            return next((w for w, v in self.choices.items() if v == self.default), None)
        if isinstance(self.default, float) and self.default.is_integer():
            return str(int(self.default))
        return str(self.default)

    @property
    def allowed(self) -> str:
        """The range or choices of the value, in words ("" when any value goes)."""
        if self.kind == "int":
            return f"{self.low}–{self.high}"
        if self.kind == "id":
            return f"0–{ID_MAX}"
        if self.kind == "float":
            return "> 0" if self.positive else "≥ 0"
        if self.kind == "octal":
            return f"0–{MODE_MAX:o}"
        if self.kind == "enum":
            return ", ".join(self.choices)
        if self.kind == "path" and self.absolute:
            return "absolute"
        return ""


def _number(convert: Callable[[str], Any], value: str, message: str) -> Any:
    try:
        if convert is int:
            return int(value, 10)
        return convert(value)
    except ValueError:
        raise OptionError(message) from None


def option(default: Any, *declared: Option, group: str) -> Any:
    """A ``MountOptions`` field with its default and the option(s) that set it."""
    return dataclasses.field(default=default, metadata={_KEY: (group, declared)})


def collect(cls: type) -> tuple[Option, ...]:
    """Every option declared on the fields of the dataclass ``cls``, in field order."""
    found: list[Option] = []
    for f in dataclasses.fields(cls):
        if _KEY not in f.metadata:  # not an option (e.g. notes gathered while parsing)
            continue
        group, declared = f.metadata[_KEY]
        for opt in declared:
            if opt.takes_value and opt.name != f.name:
                raise TypeError(f"value option {opt.name!r} declared on field {f.name!r}")
            found.append(dataclasses.replace(opt, field=f.name, default=f.default, group=group))
    return tuple(found)


def index(options: Iterable[Option]) -> dict[str, Option]:
    """Name and alias → option; a name declared twice is a TypeError (caught at import)."""
    by_name: dict[str, Option] = {}
    for opt in options:
        for name in (opt.name, *opt.aliases):
            if name in by_name or name in FSTAB_ONLY:
                raise TypeError(f"option name {name!r} declared twice")
            by_name[name] = opt
    return by_name


#: fstab / mount(8) / systemd options: accepted and ignored by s3fmfs, dropped by
#: ``mount.s3fmfs`` (flags); ``x-*`` and ``comment=`` too, with any value.
FSTAB_ONLY = frozenset(
    {
        "_netdev",
        "nofail",
        "auto",
        "noauto",
        "user",
        "nouser",
        "users",
        "owner",
        "group",
        "defaults",
        "dev",
        "nodev",
        "suid",
        "nosuid",
        "exec",
        "noexec",
        "relatime",
        "noatime",
        "nodiratime",
        "strictatime",
        "lazytime",
        "async",
    }
)
FSTAB_ONLY_PREFIXES = ("x-", "comment=")
FSTAB_ONLY_HELP = (
    ", ".join(sorted(FSTAB_ONLY))
    + ", comment=..., x-* (x-systemd.*, x-gvfs-*...): accepted for fstab and mount(8), ignored"
)


def is_fstab_only(item: str) -> bool:
    """Whether ``item`` (``name`` or ``name=value``) is for fstab/mount(8)/systemd only."""
    name = item.partition("=")[0]
    return name in FSTAB_ONLY or name == "comment" or name.startswith("x-")


def describe(opt: Option) -> str:
    """The help of ``opt`` with its default, as ``--help`` shows it."""
    default = opt.shown_default
    also = f" (also {', '.join(opt.aliases)})" if opt.aliases else ""
    if default is None:
        return opt.help + also
    if not opt.takes_value:  # "the default", "the default for host names"...
        return f"{opt.help} ({default}){also}"
    return f"{opt.help} (default {default}){also}"


def columns(rows: Iterable[tuple[str, str]], width: int = 100) -> str:
    """``rows`` of (label, text) as two aligned columns, the text wrapped under itself."""
    rows = list(rows)
    column = 2 + max(len(label) for label, _ in rows) + 2
    lines: list[str] = []
    for label, text in rows:
        lines += textwrap.wrap(
            text,
            width=width,
            initial_indent=f"  {label}".ljust(column),
            subsequent_indent=" " * column,
            break_long_words=False,
            break_on_hyphens=False,
        )
    return "\n".join(lines)


def help_text(options: Iterable[Option], s3fs_only: Iterable[str] = (), width: int = 100) -> str:
    """The ``mount options`` section of ``--help``: labels in one column, help wrapped."""
    rows = [(opt.label, describe(opt)) for opt in options]
    rows.append(("(ignored)", FSTAB_ONLY_HELP))
    if s3fs_only:
        rows.append(
            (
                "(s3fs)",
                ", ".join(sorted(s3fs_only)) + ": s3fs-fuse options accepted, each logged at "
                "mount with what s3fmfs does instead (docs/MIGRATING-FROM-S3FS.md)",
            )
        )
    return "mount options (-o name[=value],...):\n" + columns(rows, width)
