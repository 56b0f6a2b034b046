"""silentpulse-db: the SilentPulse PostgreSQL schema, its migrations and credential encryption.

Services call :func:`run_migrations` from their start-up hook; operators use the
``silentpulse-db`` command. See README.md and docs/.
"""

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__
from .errors import (
    AdministratorRequiredError,
    AlertGapError,
    BaselineError,
    ChecksumMismatchError,
    CommitOutcomeUnknownError,
    ConfigurationError,
    CredentialMigrationError,
    CryptoError,
    DatabaseAheadError,
    DatabaseConnectionError,
    DatabaseError,
    DatabaseUnavailableError,
    DirtyDatabaseError,
    ForceRefusedError,
    InvalidArgumentError,
    KeyConfigError,
    LockHolder,
    LockTimeoutError,
    LockWaitError,
    MalformedEnvelopeError,
    MigrationFailedError,
    MigrationInterruptedError,
    MigrationSetMismatchError,
    MigrationSourceError,
    MigrationStateError,
    MissingMigrationFileError,
    PermissionDeniedError,
    PoolingModeError,
    RequiredVersionError,
    ReversibilityError,
    RowSecurityError,
    ScratchDatabaseError,
    SilentPulseDBError,
    TableLockHolder,
    TableLockTimeoutError,
    TamperedValueError,
    TestServerError,
    UnknownKeyError,
    VersionNotFoundError,
)
from .results import (
    REPORT_NAMES,
    AppliedMigration,
    MigrationResult,
    StatusReport,
    VersionState,
)
from .settings import ConnectRetry, DDLLimits

if TYPE_CHECKING:
    from .credentials import migrate_credentials, verify_credentials
    from .listener import ALERT_CHANNEL, AlertEvent, AlertListener, listen_alerts
    from .migrate.commands import (
        apply_prerequisites,
        baseline,
        check,
        down,
        drift,
        force,
        goto,
        run_migrations,
        status,
        up,
        version,
    )
    from .migrate.dryrun.preview import (
        MigrationPlan,
        PlannedMigration,
        PlannedStatement,
        plan_down,
        plan_goto,
        plan_up,
    )
    from .migrate.files.lock_levels import LockTaken
    from .migrate.files.source import Migration, MigrationFile, MigrationSource, load_source
    from .pool import create_pool
    from .results import (
        CheckReport,
        DriftDifference,
        DriftExcuse,
        DriftReport,
        PartitionChange,
        PartitionCoverage,
        PartitionReport,
        PrerequisitesResult,
        RetentionAction,
        RetentionReport,
        StatusRow,
    )
    from .schema.jobs import enforce_retention, maintain_partitions
    from .tenants import set_tenant, tenant_transaction

# The engine (asyncpg, tenacity, ...) loads on first use: importing the package for
# its types or its crypto costs ~70 ms less (bench/bench_startup_tricks.py).
_COMMANDS = ".migrate.commands"
_SOURCE = ".migrate.files.source"
_PREVIEW = ".migrate.dryrun.preview"
_LAZY = {
    **dict.fromkeys(REPORT_NAMES, ".results"),  # the jobs' reports: results.py loads them
    "ALERT_CHANNEL": ".listener",
    "AlertEvent": ".listener",
    "AlertListener": ".listener",
    "listen_alerts": ".listener",
    "create_pool": ".pool",
    "tenant_transaction": ".tenants",
    "set_tenant": ".tenants",
    "apply_prerequisites": _COMMANDS,
    "baseline": _COMMANDS,
    "check": _COMMANDS,
    "down": _COMMANDS,
    "drift": _COMMANDS,
    "force": _COMMANDS,
    "goto": _COMMANDS,
    "run_migrations": _COMMANDS,
    "status": _COMMANDS,
    "up": _COMMANDS,
    "version": _COMMANDS,
    "Migration": _SOURCE,
    "MigrationFile": _SOURCE,
    "MigrationSource": _SOURCE,
    "load_source": _SOURCE,
    "LockTaken": ".migrate.files.lock_levels",
    "MigrationPlan": _PREVIEW,
    "PlannedMigration": _PREVIEW,
    "PlannedStatement": _PREVIEW,
    "plan_down": _PREVIEW,
    "plan_goto": _PREVIEW,
    "plan_up": _PREVIEW,
    "migrate_credentials": ".credentials",
    "verify_credentials": ".credentials",
    "enforce_retention": ".schema.jobs",
    "maintain_partitions": ".schema.jobs",
}


def __dir__() -> list[str]:
    # What users import, the lazy names included; not the helpers this module uses.
    return sorted({*__all__, "__doc__", "__file__", "__name__", "__path__", "__version__"})


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'silentpulse_db' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "ALERT_CHANNEL",
    "AdministratorRequiredError",
    "AlertEvent",
    "AlertGapError",
    "AlertListener",
    "AppliedMigration",
    "BaselineError",
    "CheckReport",
    "ChecksumMismatchError",
    "CommitOutcomeUnknownError",
    "ConfigurationError",
    "ConnectRetry",
    "CredentialMigrationError",
    "CryptoError",
    "DDLLimits",
    "DatabaseAheadError",
    "DatabaseConnectionError",
    "DatabaseError",
    "DatabaseUnavailableError",
    "DirtyDatabaseError",
    "DriftDifference",
    "DriftExcuse",
    "DriftReport",
    "ForceRefusedError",
    "InvalidArgumentError",
    "KeyConfigError",
    "LockHolder",
    "LockTaken",
    "LockTimeoutError",
    "LockWaitError",
    "MalformedEnvelopeError",
    "Migration",
    "MigrationFailedError",
    "MigrationFile",
    "MigrationInterruptedError",
    "MigrationPlan",
    "MigrationResult",
    "MigrationSetMismatchError",
    "MigrationSource",
    "MigrationSourceError",
    "MigrationStateError",
    "MissingMigrationFileError",
    "PartitionChange",
    "PartitionCoverage",
    "PartitionReport",
    "PermissionDeniedError",
    "PlannedMigration",
    "PlannedStatement",
    "PoolingModeError",
    "PrerequisitesResult",
    "RequiredVersionError",
    "RetentionAction",
    "RetentionReport",
    "ReversibilityError",
    "RowSecurityError",
    "ScratchDatabaseError",
    "SilentPulseDBError",
    "StatusReport",
    "StatusRow",
    "TableLockHolder",
    "TableLockTimeoutError",
    "TamperedValueError",
    "TestServerError",
    "UnknownKeyError",
    "VersionNotFoundError",
    "VersionState",
    "__version__",
    "apply_prerequisites",
    "baseline",
    "check",
    "create_pool",
    "down",
    "drift",
    "enforce_retention",
    "force",
    "goto",
    "listen_alerts",
    "load_source",
    "maintain_partitions",
    "migrate_credentials",
    "plan_down",
    "plan_goto",
    "plan_up",
    "run_migrations",
    "set_tenant",
    "status",
    "tenant_transaction",
    "up",
    "verify_credentials",
    "version",
]
