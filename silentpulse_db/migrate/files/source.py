"""Discovering migration files: a package's resources or a directory.

File names follow golang-migrate (``^([0-9]+)_(.*)\\.(down|up)\\.(.*)$``), with one
extension: ``sql``. A file named like a migration with another extension (a stray
``.up.sql.bak``) is refused: golang-migrate would run it. Up and down files pair by
version, as golang-migrate pairs them (``30_add_x.up.sql`` with ``30_drop_x.down.sql``);
either may be missing (a set may ship up files only): a run that needs the missing one
is refused then (plan.py), not when the set loads. An empty file, or one of comments
only, is a migration that runs nothing. Non-UTF-8 files are refused. Any problem is a
MigrationSourceError naming the file, raised before anything is applied.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

from ...errors import MigrationSourceError
from .directives import Directives, parse_directives

if TYPE_CHECKING:  # annotations only: a Protocol class costs start-up time

    class _Traversable(Protocol):
        """The part of importlib.resources.abc.Traversable we use (pathlib.Path fits too)."""

        @property
        def name(self) -> str: ...

        def is_file(self) -> bool: ...

        def read_bytes(self) -> bytes: ...

    class _Locator(Protocol):
        def __call__(self, entry: _Traversable, /) -> str: ...


DEFAULT_PACKAGE = "silentpulse_db.migrations"
PREREQUISITES_FILE = "prerequisites.sql"
BASELINE_FILE = "baseline.sql"
_SPECIAL_FILES = frozenset({PREREQUISITES_FILE, BASELINE_FILE})

FILE_PATTERN = re.compile(r"^([0-9]+)_(.*)\.(down|up)\.(.*)$")

Direction = Literal["up", "down"]


@dataclass(frozen=True)
class MigrationFile:
    """One ``.sql`` file: its name, where it came from, its text and checksum."""

    filename: str
    location: str
    sql: str
    checksum: str = field(repr=False)

    def __str__(self) -> str:
        return self.location

    @functools.cached_property
    def directives(self) -> Directives:
        """The ``-- silentpulse: ...`` header comments (MigrationSourceError if malformed)."""
        return parse_directives(self.sql, self.location)

    @functools.cached_property
    def empty(self) -> bool:
        """Whether the file holds no statement: blanks, comments and semicolons only (a
        migration that runs nothing, as in golang-migrate). Read without the parser, for
        `status`; the runner's parser decides what runs."""
        return _holds_no_statement(self.sql)


def _holds_no_statement(sql: str) -> bool:
    at, end = 0, len(sql)
    while at < end:
        if sql[at].isspace() or sql[at] == ";":
            at += 1
        elif sql.startswith("--", at):
            newline = sql.find("\n", at)
            at = end if newline < 0 else newline + 1
        elif sql.startswith("/*", at):
            close = sql.find("*/", at + 2)
            if close < 0:
                return False
            at = close + 2  # a nested comment ends early here: "not empty", parser decides
        else:
            return False
    return True


@dataclass(frozen=True)
class Migration:
    """A numbered migration: the files of one version, paired by version as golang-migrate
    pairs them (``30_add_x.up.sql`` with ``30_drop_x.down.sql``); its name is the up
    file's (the down file's when there is no up file). Either file may be missing, not
    both: a run that needs a missing one is refused before anything runs (plan.py)."""

    version: int
    name: str
    up: MigrationFile | None
    down: MigrationFile | None

    def file(self, direction: Direction) -> MigrationFile | None:
        return self.up if direction == "up" else self.down

    @property
    def location(self) -> str:
        """Where the version is: its up file, else its down file."""
        present = self.up or self.down
        return present.location if present else str(self.version)

    @property
    def stem(self) -> str:
        """``NNNNNN_name`` as its up file (else its down file) spells it."""
        present = self.up or self.down
        match = FILE_PATTERN.match(present.filename) if present else None
        return f"{match.group(1)}_{match.group(2)}" if match else f"{self.version}_{self.name}"

    def missing_filename(self, direction: Direction) -> str:
        """The name ``direction``'s file would have beside the other one."""
        return f"{self.stem}.{direction}.sql"


@dataclass(frozen=True)
class MigrationSource:
    """A validated, ordered set of migrations and the optional special files."""

    description: str
    migrations: tuple[Migration, ...]
    prerequisites: MigrationFile | None = None
    baseline: MigrationFile | None = None

    @property
    def versions(self) -> tuple[int, ...]:
        return tuple(m.version for m in self.migrations)

    @property
    def latest(self) -> int | None:
        return self.migrations[-1].version if self.migrations else None

    def get(self, version: int) -> Migration | None:
        return self._by_version.get(version)

    @functools.cached_property
    def _by_version(self) -> dict[int, Migration]:
        # A start-up compares every applied version with its file: one lookup each. The
        # first of a version wins, as the scan this replaced (only a set made by hand
        # can hold one twice: load_source refuses it).
        return {migration.version: migration for migration in reversed(self.migrations)}

    def previous_version(self, version: int) -> int | None:
        """The version below ``version`` in this set, or None (no version) below the first."""
        earlier = [m.version for m in self.migrations if m.version < version]
        return earlier[-1] if earlier else None

    @classmethod
    def from_directory(cls, path: str | os.PathLike[str]) -> MigrationSource:
        """The migrations in a folder (``NNNNNN_name.up.sql`` / ``.down.sql``, and the specials)."""
        directory = Path(path)
        if not directory.is_dir():
            raise MigrationSourceError(
                f"migrations folder {str(directory)!r} is not a directory", file=str(directory)
            )
        try:
            with os.scandir(directory) as found:
                entries: list[_Traversable] = sorted(map(_DirFile, found), key=lambda e: e.name)
        except OSError as exc:  # a folder this user may not list
            raise MigrationSourceError(
                f"migrations folder {str(directory)!r} cannot be read: {exc.strerror or exc}",
                file=str(directory),
            ) from None
        return _build(str(directory), entries, lambda e: os.path.join(directory, e.name))

    @classmethod
    def from_package(cls, package: str = DEFAULT_PACKAGE) -> MigrationSource:
        """The migrations shipped as resources of an importable package (default: ours)."""
        try:
            folders: list[str] = list(getattr(importlib.import_module(package), "__path__", []))
            entries: list[_Traversable]
            if len(folders) == 1 and os.path.isdir(folders[0]):
                # Installed as files (the usual case): listed directly; spares a CLI
                # start-up importing importlib_resources (~4 ms) and its files().
                with os.scandir(folders[0]) as found:
                    entries = sorted(map(_DirFile, found), key=lambda e: e.name)
            else:  # in a zip, or a namespace package spread over folders
                import importlib_resources

                root = importlib_resources.files(package)
                entries = sorted(root.iterdir(), key=lambda e: e.name)
        except (ModuleNotFoundError, TypeError, ValueError) as exc:
            raise MigrationSourceError(
                f"migrations package {package!r} cannot be imported ({exc}); "
                f"for a folder pass a pathlib.Path",
                file=package,
            ) from None
        return _build(package, entries, lambda e: f"{package}/{e.name}")


class _DirFile:
    """A folder's entry: its file type comes with the listing (no stat per file, unlike
    Path.is_file), which matters when a folder holds a thousand files."""

    __slots__ = ("_file", "name", "path")

    def __init__(self, entry: os.DirEntry[str]) -> None:
        self.name, self.path, self._file = entry.name, entry.path, entry.is_file()

    def is_file(self) -> bool:
        return self._file

    def read_bytes(self) -> bytes:
        # os.read without the io layer: about half the time of open().read() per file.
        fd = os.open(self.path, os.O_RDONLY)
        try:
            chunks = []
            while chunk := os.read(fd, 1 << 20):
                chunks.append(chunk)
            return b"".join(chunks)
        finally:
            os.close(fd)


SourceLike = MigrationSource | os.PathLike[str] | str | None


def load_source(source: SourceLike = None) -> MigrationSource:
    """Resolve what the public functions accept as ``source``.

    None is the set packaged in silentpulse_db; a ``pathlib.Path`` (any
    path-like) is a folder; a ``str`` is an importable package name; a
    MigrationSource is used as it is. Nothing is guessed from the current
    directory.
    """
    if source is None:
        return _package(DEFAULT_PACKAGE)
    if isinstance(source, MigrationSource):
        return source
    if isinstance(source, str):
        return _package(source)
    return MigrationSource.from_directory(source)


@functools.lru_cache(maxsize=16)
def _package(name: str) -> MigrationSource:
    """A package's migrations, read once per process: installed files do not change
    under a running service, and reading and hashing 40 files cost a no-op start-up
    about 5 ms. (A folder is read on every call: operators edit folders.)"""
    return MigrationSource.from_package(name)


def _build(
    description: str,
    entries: Sequence[_Traversable],
    locate: _Locator,
) -> MigrationSource:
    ups: dict[int, tuple[str, MigrationFile]] = {}
    downs: dict[int, tuple[str, MigrationFile]] = {}
    specials: dict[str, MigrationFile] = {}
    for entry in entries:
        name = entry.name
        match = FILE_PATTERN.match(name)
        if not entry.is_file() or (not name.endswith(".sql") and match is None):
            continue  # __init__.py, README, folders: not migrations
        location = locate(entry)
        if name in _SPECIAL_FILES:
            specials[name] = _read(entry, location)
            continue
        if match is None or not match.group(2):
            raise MigrationSourceError(
                f"{location}: malformed migration file name; expected "
                f"NNNNNN_name.up.sql or NNNNNN_name.down.sql",
                file=location,
            )
        if match.group(4) != "sql":
            # golang-migrate takes any extension after .up/.down: it would run a stray
            # backup (or refuse the set, the backup's version and direction taken twice).
            raise MigrationSourceError(
                f"{location}: named like a migration but not a .sql file: golang-migrate "
                f"would run it as version {int(match.group(1))} {match.group(3)} (it takes "
                f"any extension after .up/.down), this engine only NNNNNN_name.up.sql / "
                f".down.sql. Rename it, or move it out of the folder if it is a stray copy",
                file=location,
            )
        version, label, direction = int(match.group(1)), match.group(2), match.group(3)
        bucket = ups if direction == "up" else downs
        if version in bucket:
            other = bucket[version][1].location
            raise MigrationSourceError(
                f"{location}: duplicate migration file: version {version} {direction} "
                f"is also {other}",
                file=location,
            )
        bucket[version] = (label, _read(entry, location))

    migrations = []
    for version in sorted(set(ups) | set(downs)):
        # Paired by version (the names may differ, as golang-migrate allows); a missing
        # file is refused by the run that needs it (plan.py), not here.
        up, down = ups.get(version), downs.get(version)
        label = up[0] if up else down[0] if down else ""
        migrations.append(
            Migration(
                version=version,
                name=label,
                up=up[1] if up else None,
                down=down[1] if down else None,
            )
        )
    return MigrationSource(
        description=description,
        migrations=tuple(migrations),
        prerequisites=specials.get(PREREQUISITES_FILE),
        baseline=specials.get(BASELINE_FILE),
    )


def _read(entry: _Traversable, location: str) -> MigrationFile:
    try:
        raw = entry.read_bytes()
    except OSError as exc:  # a file this user may not read, or gone since the listing
        raise MigrationSourceError(
            f"{location}: cannot be read: {exc.strerror or exc}", file=location
        ) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise MigrationSourceError(
            f"{location}: not valid UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start}, "
            f"line {line})",
            file=location,
        ) from None
    # A BOM would reach the server as part of the first statement.
    text = text.removeprefix("\ufeff")
    file = MigrationFile(
        filename=entry.name,
        location=location,
        sql=text,
        checksum=hashlib.sha256(raw).hexdigest(),
    )
    file.directives  # noqa: B018  # read now: a malformed one stops before anything runs
    return file
