"""silentpulse-db: the SilentPulse PostgreSQL schema, its migrations and credential encryption.

Services call :func:`run_migrations` from their start-up hook; operators use the
``silentpulse-db`` command. See README.md and docs/.
"""

import importlib
import warnings
from typing import TYPE_CHECKING, Any

from ._version import __version__
from .errors import (
    AdministratorRequiredError,
    AlertGapError,
    BaselineError,
    ChecksumMismatchError,
    CitusRequiredError,
    CommitOutcomeUnknownError,
    ConfigurationError,
    CredentialMigrationError,
    CryptoError,
    DatabaseAheadError,
    DatabaseConnectionError,
    DatabaseError,
    DatabaseUnavailableError,
    DirtyDatabaseError,
    DistributionError,
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
    SchemaVersionError,
    ScratchDatabaseError,
    SilentPulseDBError,
    TableLockHolder,
    TableLockTimeoutError,
    TamperedValueError,
    TestServerError,
    UnknownKeyError,
    VersionNotFoundError,
)
from .results import HOMES as RESULT_HOMES
from .settings import ConnectRetry, DDLLimits

if TYPE_CHECKING:
    # The "X as X" imports: deprecated here (see _MOVED), typed for code that still uses them.
    from .credentials import migrate_credentials as migrate_credentials
    from .credentials import verify_credentials as verify_credentials
    from .listener import ALERT_CHANNEL, AlertEvent, AlertListener, listen_alerts
    from .migrate import LockTaken as LockTaken
    from .migrate import Migration as Migration
    from .migrate import MigrationFile as MigrationFile
    from .migrate import MigrationPlan as MigrationPlan
    from .migrate import MigrationSource as MigrationSource
    from .migrate import PlannedMigration as PlannedMigration
    from .migrate import PlannedStatement as PlannedStatement
    from .migrate import apply_prerequisites as apply_prerequisites
    from .migrate import baseline as baseline
    from .migrate import check as check
    from .migrate import down as down
    from .migrate import drift as drift
    from .migrate import force as force
    from .migrate import goto as goto
    from .migrate import load_source as load_source
    from .migrate import plan_down as plan_down
    from .migrate import plan_goto as plan_goto
    from .migrate import plan_up as plan_up
    from .migrate import status as status
    from .migrate import up as up
    from .migrate import version as version
    from .migrate.commands import run_migrations
    from .pool import create_pool
    from .results import (
        AppliedMigration,
        MigrationResult,
        PartitionChange,
        PartitionCoverage,
        PartitionReport,
        RetentionAction,
        RetentionReport,
        VersionState,
    )
    from .results import CheckReport as CheckReport
    from .results import DistributionReport as DistributionReport
    from .results import DistributionSetting as DistributionSetting
    from .results import DistributionStep as DistributionStep
    from .results import DriftDifference as DriftDifference
    from .results import DriftExcuse as DriftExcuse
    from .results import DriftReport as DriftReport
    from .results import PrerequisitesResult as PrerequisitesResult
    from .results import StatusReport as StatusReport
    from .results import StatusRow as StatusRow
    from .results import TablePlacement as TablePlacement
    from .schema.jobs import enforce_retention, maintain_partitions
    from .tenants import set_tenant, tenant_transaction

# The engine (asyncpg, tenacity, ...) loads on first use: importing the package for
# its types or its crypto costs ~70 ms less (bench/bench_startup_tricks.py).
_COMMANDS = ".migrate.commands"
_LAZY = {
    **dict.fromkeys(RESULT_HOMES, ".results"),  # each loads its room of results/ in turn
    "ALERT_CHANNEL": ".listener",
    "AlertEvent": ".listener",
    "AlertListener": ".listener",
    "listen_alerts": ".listener",
    "create_pool": ".pool",
    "tenant_transaction": ".tenants",
    "set_tenant": ".tenants",
    "run_migrations": _COMMANDS,
    "enforce_retention": ".schema.jobs",
    "maintain_partitions": ".schema.jobs",
}


def __dir__() -> list[str]:
    # What users import, the lazy names included; not the helpers this module uses.
    return sorted({*__all__, "__doc__", "__file__", "__name__", "__path__", "__version__"})


# The operator verbs and their types live in silentpulse_db.migrate (as alembic keeps its
# commands in alembic.command), what the operator verbs return in silentpulse_db.results,
# the credential verbs in silentpulse_db.credentials; the top level keeps what a service
# imports (run_migrations and its result, the pool, tenants, the listener, the jobs a
# worker runs, the errors). Their old names here work until 0.3.0.
_OPERATOR_RESULTS = (
    "CheckReport",
    "DistributionReport",
    "DistributionSetting",
    "DistributionStep",
    "DriftDifference",
    "DriftExcuse",
    "DriftReport",
    "PrerequisitesResult",
    "StatusReport",
    "StatusRow",
    "TablePlacement",
)
_MOVED = {
    **dict.fromkeys(
        (
            "apply_prerequisites",
            "baseline",
            "check",
            "down",
            "drift",
            "force",
            "goto",
            "status",
            "up",
            "version",
            "plan_down",
            "plan_goto",
            "plan_up",
            "MigrationPlan",
            "PlannedMigration",
            "PlannedStatement",
            "LockTaken",
            "Migration",
            "MigrationFile",
            "MigrationSource",
            "load_source",
        ),
        "silentpulse_db.migrate",
    ),
    **dict.fromkeys(_OPERATOR_RESULTS, "silentpulse_db.results"),
    "migrate_credentials": "silentpulse_db.credentials",
    "verify_credentials": "silentpulse_db.credentials",
}


def __getattr__(name: str) -> Any:
    home = _MOVED.get(name)
    if home is not None:
        warnings.warn(
            f"silentpulse_db.{name} is deprecated and goes in 0.3.0: "
            f"use {home}.{name} (from {home} import {name})",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module(home), name)
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
    "ChecksumMismatchError",
    "CitusRequiredError",
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
    "DistributionError",
    "ForceRefusedError",
    "InvalidArgumentError",
    "KeyConfigError",
    "LockHolder",
    "LockTimeoutError",
    "LockWaitError",
    "MalformedEnvelopeError",
    "MigrationFailedError",
    "MigrationInterruptedError",
    "MigrationResult",
    "MigrationSetMismatchError",
    "MigrationSourceError",
    "MigrationStateError",
    "MissingMigrationFileError",
    "PartitionChange",
    "PartitionCoverage",
    "PartitionReport",
    "PermissionDeniedError",
    "PoolingModeError",
    "RequiredVersionError",
    "RetentionAction",
    "RetentionReport",
    "ReversibilityError",
    "RowSecurityError",
    "SchemaVersionError",
    "ScratchDatabaseError",
    "SilentPulseDBError",
    "TableLockHolder",
    "TableLockTimeoutError",
    "TamperedValueError",
    "TestServerError",
    "UnknownKeyError",
    "VersionNotFoundError",
    "VersionState",
    "__version__",
    "create_pool",
    "enforce_retention",
    "listen_alerts",
    "maintain_partitions",
    "run_migrations",
    "set_tenant",
    "tenant_transaction",
]
