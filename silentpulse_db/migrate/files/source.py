"""Discovering migration files: a package's resources or a directory.

File names follow golang-migrate (``^([0-9]+)_(.*)\\.(down|up)\\.(.*)$``, here with
the ``sql`` extension). On top of golang-migrate this project requires a down
file for every up file and rejects empty or non-UTF-8 files. Any problem is a
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


@dataclass(frozen=True)
class Migration:
    """A numbered migration: the pair of files for one version."""

    version: int
    name: str
    up: MigrationFile
    down: MigrationFile

    def file(self, direction: Direction) -> MigrationFile:
        return self.up if direction == "up" else self.down


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
        for migration in self.migrations:
            if migration.version == version:
                return migration
        return None

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
        with os.scandir(directory) as found:
            entries: list[_Traversable] = sorted(map(_DirFile, found), key=lambda e: e.name)
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
        if match is None or match.group(4) != "sql" or not match.group(2):
            raise MigrationSourceError(
                f"{location}: malformed migration file name; expected "
                f"NNNNNN_name.up.sql or NNNNNN_name.down.sql",
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
        if version not in downs or version not in ups:
            present, missing = (ups, "down") if version in ups else (downs, "up")
            location = present[version][1].location
            raise MigrationSourceError(
                f"{location}: no {missing} file for version {version}; every migration needs "
                f"both .up.sql and .down.sql",
                file=location,
            )
        (up_label, up), (down_label, down) = ups[version], downs[version]
        if up_label != down_label:
            raise MigrationSourceError(
                f"{down.location}: name {down_label!r} does not match its up file "
                f"{up.location} ({up_label!r})",
                file=down.location,
            )
        migrations.append(Migration(version=version, name=up_label, up=up, down=down))
    return MigrationSource(
        description=description,
        migrations=tuple(migrations),
        prerequisites=specials.get(PREREQUISITES_FILE),
        baseline=specials.get(BASELINE_FILE),
    )


def _read(entry: _Traversable, location: str) -> MigrationFile:
    raw = entry.read_bytes()
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
    if not text.strip():
        raise MigrationSourceError(f"{location}: file is empty", file=location)
    file = MigrationFile(
        filename=entry.name,
        location=location,
        sql=text,
        checksum=hashlib.sha256(raw).hexdigest(),
    )
    file.directives  # noqa: B018  # read now: a malformed one stops before anything runs
    return file
