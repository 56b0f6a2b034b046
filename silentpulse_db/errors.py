"""The one exception hierarchy of silentpulse_db.

Every error the library raises on purpose derives from :class:`SilentPulseDBError`.
Messages name the file, line, setting or row at fault and never carry a
password, key or plaintext. Grouped by what the caller does about them, as
httpx groups its own (``retryable``: the same call, unchanged, can succeed)::

    SilentPulseDBError
    ├── InvalidArgumentError (also ValueError)    a value the call does not take
    │   └── VersionNotFoundError                  goto/force: no file of that version
    ├── ConfigurationError                        fix the setting it names
    │   ├── PoolingModeError
    │   ├── CitusRequiredError                    distribute: not a Citus coordinator
    │   ├── ScratchDatabaseError
    │   ├── KeyConfigError (also CryptoError)
    │   └── RowSecurityError (also CredentialMigrationError)
    ├── DatabaseConnectionError                   retryable when transient
    │   └── DatabaseUnavailableError              retryable: answer 503
    │       └── CommitOutcomeUnknownError         not retryable: it may have committed
    ├── PermissionDeniedError                     run the GRANT it gives
    │   └── AdministratorRequiredError
    ├── DatabaseError
    │   └── DistributionError                     distribute: Citus refused a step
    ├── LockWaitError                             retryable: another session held a lock
    │   ├── LockTimeoutError                      the migration lock, or the version tables
    │   └── TableLockTimeoutError (also MigrationFailedError)   a table's lock
    ├── MigrationStateError                       the version table's state refuses it
    │   ├── DirtyDatabaseError
    │   ├── ForceRefusedError
    │   ├── DatabaseAheadError
    │   ├── ChecksumMismatchError
    │   ├── MigrationSetMismatchError
    │   ├── RequiredVersionError                  retryable: once the other set is applied
    │   ├── SchemaVersionError                    migrate first (distribute's version)
    │   └── BaselineError                         baseline: versioned, or another schema
    ├── MigrationSourceError                      fix the file it names
    │   └── MissingMigrationFileError
    ├── MigrationFailedError                      a file's SQL failed
    │   ├── MigrationInterruptedError
    │   └── TableLockTimeoutError
    ├── ReversibilityError
    ├── AlertGapError
    ├── TestServerError
    ├── CryptoError
    │   ├── KeyConfigError
    │   ├── UnknownKeyError
    │   ├── TamperedValueError
    │   └── MalformedEnvelopeError
    └── CredentialMigrationError
        └── RowSecurityError

tests/test_errors_tree.py holds this drawing against the classes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime


class SilentPulseDBError(Exception):
    """Base of every error raised by silentpulse_db.

    ``retryable``: whether running the same operation again, unchanged, can succeed and
    is safe (the database back after a restart). False unless the error says so: the
    connection errors below set it.
    """

    retryable: bool = False


class InvalidArgumentError(SilentPulseDBError, ValueError):
    """A function was called with a value it does not take: a bug in the calling code, or
    a version the migration files do not have (:class:`VersionNotFoundError`); not the
    database's state. A ValueError too."""


# --- configuration ---------------------------------------------------------


class ConfigurationError(SilentPulseDBError):
    """A setting (DSN, environment variable, path, option) is missing or malformed."""


class PoolingModeError(ConfigurationError):
    """The DSN reaches PostgreSQL through a connection pooler that does not keep a
    session (``mode``: "transaction" or "statement"), and the operation needs one
    (migrations, the alert listener): connect directly or in session pooling."""

    def __init__(self, message: str, *, mode: str) -> None:
        super().__init__(message)
        self.mode = mode


# --- connecting --------------------------------------------------------------


class DatabaseConnectionError(SilentPulseDBError):
    """The database could not be reached, or refused us for good.

    ``transient`` is true when the last failure was of the kind that passes by
    itself (refused, reset, starting up), false for a wrong password or an
    unknown database. ``retryable`` is ``transient``.
    """

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient
        self.retryable = transient


class DatabaseUnavailableError(DatabaseConnectionError):
    """The database cannot serve right now, and will again: the server refused the
    connection, is starting up, shutting down or restarting, has no connection slot
    left, a pooler in between cannot log in to it (PgBouncer's ``server_login_retry``),
    or the connection went away before the transaction committed.

    Nothing of the transaction was kept (a server rolls back the transaction of a lost
    connection): ``retryable`` and ``transient`` are true. An endpoint answers 503; a
    handler may run the transaction again, on a pool, once the server is back.
    ``sqlstate``: the code the server or the pooler sent, if any (``57P03``: starting
    up, ``57P01``: shut down, ``53300``: no slot left, ``08...``: connection).
    """

    def __init__(self, message: str, *, sqlstate: str | None = None) -> None:
        super().__init__(message, transient=True)
        self.sqlstate = sqlstate


class CommitOutcomeUnknownError(DatabaseUnavailableError):
    """The connection went away while COMMIT was in flight: the transaction may have
    committed, or not, and nothing can tell which but reading the data again. Still a
    :class:`DatabaseUnavailableError` (an endpoint answers 503), but ``retryable`` is
    false: run it again only if it is idempotent."""

    def __init__(self, message: str, *, sqlstate: str | None = None) -> None:
        super().__init__(message, sqlstate=sqlstate)
        self.retryable = False


class PermissionDeniedError(SilentPulseDBError):
    """The role lacks a privilege: ``role`` needs ``privilege`` on ``object``."""

    def __init__(self, message: str, *, role: str, privilege: str, object: str) -> None:
        super().__init__(message)
        self.role = role
        self.privilege = privilege
        self.object = object


class AdministratorRequiredError(PermissionDeniedError):
    """What the role cannot do itself, and an administrator can: ``statements`` are the
    exact SQL an administrator runs (once) for the operation to work as this role.
    Nothing was changed. The CLIs exit 3 on it (silentpulse_db.console)."""

    def __init__(
        self,
        message: str,
        *,
        role: str,
        privilege: str,
        object: str,
        statements: Sequence[str],
    ) -> None:
        super().__init__(message, role=role, privilege=privilege, object=object)
        self.statements = tuple(statements)


class ScratchDatabaseError(ConfigurationError):
    """The database given for `check`'s proofs (``scratch_dsn``, ``--scratch-dsn``) cannot
    serve: it is the live database, or it is not empty. Nothing was changed in it."""


class DatabaseError(SilentPulseDBError):
    """The database refused an operation outside a migration file; ``sqlstate`` says why."""

    def __init__(self, message: str, *, sqlstate: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


# --- distributing the schema on Citus ------------------------------------------------


class CitusRequiredError(ConfigurationError):
    """``distribute`` was pointed at a database that is not a Citus coordinator that can
    hold shards: plain PostgreSQL, a database without the citus extension, a Citus
    worker, or a coordinator with no node to place shards on. ``found`` says which, in
    words. Nothing was changed."""

    def __init__(self, message: str, *, found: str) -> None:
        super().__init__(message)
        self.found = found


class DistributionError(DatabaseError):
    """Citus refused a step of ``distribute`` (``table``, ``step``: what it was doing), or
    the database holds a placement that distribute does not make (a tenant table
    distributed by another column, in another colocation group, a reference table
    where a distributed one is planned). Each step commits alone: ``done`` lists the
    steps this run completed before it, which stay done; fix what the message names and
    run distribute again, which goes on from there. A table lock waited for past the
    retries (``sqlstate`` 55P03) is ``retryable``."""

    def __init__(
        self,
        message: str,
        *,
        table: str,
        step: str,
        sqlstate: str | None = None,
        done: Sequence[str] = (),
    ) -> None:
        super().__init__(message, sqlstate=sqlstate)
        self.table = table
        self.step = step
        self.done = tuple(done)
        self.retryable = sqlstate == "55P03"


# --- migration files ---------------------------------------------------------


class MigrationSourceError(SilentPulseDBError):
    """The set of migration files is invalid; nothing was applied."""

    def __init__(self, message: str, *, file: str | None = None) -> None:
        super().__init__(message)
        self.file = file


class MissingMigrationFileError(MigrationSourceError):
    """A run needs a file the set does not have: ``version``'s ``direction`` file (a set
    may ship up files only). golang-migrate runs a missing file as an empty one (it
    records the version and leaves the schema as it is); this refuses, before anything
    runs. ``file``: the version's file that exists."""

    def __init__(self, message: str, *, file: str | None, version: int, direction: str) -> None:
        super().__init__(message, file=file)
        self.version = version
        self.direction = direction


# --- waiting for a lock ------------------------------------------------------------


class LockWaitError(SilentPulseDBError):
    """A lock another session held was waited for as long as allowed: the migration
    lock (:class:`LockTimeoutError`) or a table's (:class:`TableLockTimeoutError`).
    Nothing was changed by the wait; the same call can succeed once the holder is done."""

    retryable = True


class LockTimeoutError(LockWaitError):
    """The migration lock stayed held by someone else for longer than
    ``migration_lock_timeout`` (the CLI's ``--migration-lock-timeout``): ``holders``; or
    another session held a lock on the version tables that long: ``blockers``. A
    migration's table lock waited for too long is :class:`TableLockTimeoutError`; both
    are :class:`LockWaitError`."""

    def __init__(
        self,
        message: str,
        *,
        holders: Sequence[LockHolder] = (),
        blockers: Sequence[TableLockHolder] = (),
    ) -> None:
        super().__init__(message)
        self.holders = tuple(holders)
        self.blockers = tuple(blockers)


@dataclass(frozen=True)
class LockHolder:
    """A backend that held a migration lock key, as pg_stat_activity shows it."""

    pid: int
    application_name: str
    key: int
    state: str | None = None
    client_addr: str | None = None
    since: datetime | None = None  # when its current transaction started
    # The role that asked, when PostgreSQL hid this backend's details from it.
    hidden_from: str | None = None
    # Connected from the pooler the asking session goes through: ``pid`` is one of the
    # pooler's server connections and ``client_addr`` the pooler's.
    through_pooler: bool = False
    # The role it is logged in as (any role may see it): a session's application_name
    # is whatever it chose to call itself.
    role: str | None = None

    def __str__(self) -> str:
        parts = [f"pid {self.pid}", *_as_role(self.role)]
        parts.append(f"application_name {self.application_name or '<none>'!r}")
        parts.append(f"key {self.key}")
        if self.through_pooler:
            where = f" at {self.client_addr}" if self.client_addr else ""
            parts.append(f"through the connection pooler{where} this session uses")
        elif self.client_addr:
            parts.append(f"client {self.client_addr}")
        if self.since is not None:
            parts.append(f"in a transaction since {self.since:%Y-%m-%d %H:%M:%S%z}")
        return ", ".join(parts) + _hidden(self.hidden_from)


@dataclass(frozen=True)
class TableLockHolder:
    """A session holding a table lock that a migration statement waited for."""

    pid: int
    application_name: str
    relation: str
    mode: str
    state: str | None = None
    # Its current or last statement, string literals replaced by '?' (they may hold
    # secrets), cut to 200 characters.
    query: str | None = None
    since: datetime | None = None  # when its transaction started
    age: float | None = None  # seconds since then, by the server's clock
    # The role that asked, when PostgreSQL hid this session's details from it.
    hidden_from: str | None = None
    # The role it is logged in as (any role may see it), as for LockHolder.
    role: str | None = None

    def __str__(self) -> str:
        parts = [f"pid {self.pid}", *_as_role(self.role)]
        parts.append(f"application_name {self.application_name or '<none>'!r}")
        parts.append(f"{self.mode} on {self.relation}")
        if self.since is not None:
            age = "" if self.age is None else f"for {self.age:.0f}s "
            parts.append(f"in a transaction {age}(since {self.since:%Y-%m-%d %H:%M:%S%z})")
        if self.state:
            parts.append(self.state)
        if self.query:
            parts.append(f"query: {self.query[:120]}")
        return ", ".join(parts) + _hidden(self.hidden_from)


def _as_role(role: str | None) -> list[str]:
    return [] if role is None else [f"role {role!r}"]


def _hidden(role: str | None) -> str:
    if role is None:
        return ""
    return (
        f" (its application, client, state and query are hidden from role {role!r}: "
        f"GRANT pg_read_all_stats TO {role} shows them)"
    )


# --- the database's migration state ------------------------------------------


class MigrationStateError(SilentPulseDBError):
    """What the version table says refuses the request (dirty, ahead of the files,
    another set's, a changed file, a required version missing; for baseline, a version
    already there or a schema that is not the baseline's): nothing ran, and an operator
    decides what comes next."""


class DirtyDatabaseError(MigrationStateError):
    """schema_migrations says a migration stopped partway (dirty = true)."""

    def __init__(self, message: str, *, version: int) -> None:
        super().__init__(message)
        self.version = version


class ForceRefusedError(MigrationStateError):
    """`force` refused to record a version the catalog contradicts: its up file builds an
    index concurrently and that index is INVALID or missing (a run heals it instead)."""

    def __init__(self, message: str, *, version: int) -> None:
        super().__init__(message)
        self.version = version


class DatabaseAheadError(MigrationStateError):
    """The database is at a version the migration files do not contain."""

    def __init__(self, message: str, *, database_version: int, latest_file_version: int | None):
        super().__init__(message)
        self.database_version = database_version
        self.latest_file_version = latest_file_version


class ChecksumMismatchError(MigrationStateError):
    """An applied migration file changed after it was applied (strict mode)."""


class MigrationFailedError(SilentPulseDBError):
    """A migration's SQL failed; its transaction was rolled back (or the DB is dirty)."""

    def __init__(
        self,
        message: str,
        *,
        file: str,
        line: int | None = None,
        column: int | None = None,
        sqlstate: str | None = None,
        server_message: str | None = None,
        dirty: bool = False,
    ) -> None:
        super().__init__(message)
        self.file = file
        self.line = line
        self.column = column
        self.sqlstate = sqlstate
        self.server_message = server_message
        self.dirty = dirty


class MigrationInterruptedError(MigrationFailedError):
    """The connection was lost while a migration ran (terminated, reset, server gone)."""


class TableLockTimeoutError(MigrationFailedError, LockWaitError):
    """A migration kept waiting for a table lock past its retries; nothing of it was
    applied and the version is unchanged, clean. ``blockers`` lists who held the lock."""

    def __init__(
        self, message: str, *, file: str, blockers: Sequence[TableLockHolder] = ()
    ) -> None:
        super().__init__(message, file=file, sqlstate="55P03")
        self.blockers = tuple(blockers)


class MigrationSetMismatchError(MigrationStateError):
    """The version table records migrations applied from other files (another set's):
    two sets of migrations share one version table. ``table`` names it."""

    def __init__(self, message: str, *, table: str) -> None:
        super().__init__(message)
        self.table = table


class RequiredVersionError(MigrationStateError):
    """A migration requires another set's version (``-- silentpulse: requires``) that the
    database has not reached. ``file``, ``table``, ``version``; ``found``: what that
    table says, in words ("no such table", "no version", "version 12 (dirty)"). Retryable:
    the same call succeeds once that set is applied (run_migrations waits for it)."""

    retryable = True

    def __init__(self, message: str, *, file: str, table: str, version: int, found: str) -> None:
        super().__init__(message)
        self.file = file
        self.table = table
        self.version = version
        self.found = found


class SchemaVersionError(MigrationStateError):
    """The database's schema is older than an operation needs: ``required``, the version
    it needs; ``found``, the database's (None: never migrated). ``distribute`` needs the
    keys that lead with tenant_id. Run ``silentpulse-db up`` first; nothing was changed."""

    def __init__(self, message: str, *, required: int, found: int | None) -> None:
        super().__init__(message)
        self.required = required
        self.found = found


class AlertGapError(SilentPulseDBError):
    """The alert listener's position is behind changes that retention deleted from the
    alert change log: they are lost to it, and it says so rather than skip them.
    ``consumer`` (None: a listener without a name), ``position`` and ``pruned_to``
    (places in the log, ``"<xid>.<seq>"``)."""

    def __init__(
        self, message: str, *, consumer: str | None, position: str, pruned_to: str
    ) -> None:
        super().__init__(message)
        self.consumer = consumer
        self.position = position
        self.pruned_to = pruned_to


class VersionNotFoundError(InvalidArgumentError):
    """A requested target version has no migration file (goto, force)."""


class BaselineError(MigrationStateError):
    """The database cannot be adopted with baseline (already versioned, or schema differs)."""


class TestServerError(SilentPulseDBError):
    """The throwaway PostgreSQL of the test harness could not be set up or started."""


class ReversibilityError(SilentPulseDBError):
    """`check` found a down migration that does not undo its up migration."""


# --- credentials -------------------------------------------------------------


class CryptoError(SilentPulseDBError):
    """Base of envelope and key errors. Never carries key material or plaintext."""


class KeyConfigError(CryptoError, ConfigurationError):
    """A key setting is missing or malformed (wrong length, not hex)."""


class UnknownKeyError(CryptoError):
    """The envelope names a key id that the keyring does not hold."""


class TamperedValueError(CryptoError):
    """Authentication failed: the value was altered or moved to another row, column or tenant."""


class MalformedEnvelopeError(CryptoError):
    """The bytes are not an envelope: too short or an unknown version."""


class CredentialMigrationError(SilentPulseDBError):
    """migrate-credentials could not complete; everything was rolled back."""


class RowSecurityError(CredentialMigrationError, ConfigurationError):
    """Row-level security does not treat the role as the operation needs; ``role``
    names it. migrate-credentials refuses a role that cannot see every tenant's rows
    (no BYPASSRLS, or app.current_tenant set); create_pool refuses a role that sees
    them all (a superuser or BYPASSRLS) unless told it is meant, and a role or database
    default of app.current_tenant whatever it is told. (A
    CredentialMigrationError too, as it was first raised by migrate-credentials.)"""

    def __init__(self, message: str, *, role: str) -> None:
        super().__init__(message)
        self.role = role
