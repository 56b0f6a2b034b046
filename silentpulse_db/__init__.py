"""silentpulse-db: the SilentPulse PostgreSQL schema, its migrations and credential encryption.

Services call :func:`run_migrations` from their start-up hook; operators use the
``silentpulse-db`` command. See README.md and docs/.
"""

import importlib
from typing import TYPE_CHECKING, Any

from .errors import (
    BaselineError,
    ChecksumMismatchError,
    ConfigurationError,
    CredentialMigrationError,
    CryptoError,
    DatabaseAheadError,
    DatabaseConnectionError,
    DirtyDatabaseError,
    KeyConfigError,
    LockHolder,
    LockTimeoutError,
    MalformedEnvelopeError,
    MigrationFailedError,
    MigrationInterruptedError,
    MigrationSourceError,
    ReversibilityError,
    SilentPulseDBError,
    TamperedValueError,
    UnknownKeyError,
    VersionNotFoundError,
)
from .results import (
    AppliedMigration,
    MigrationResult,
    PrerequisitesResult,
    StatusRow,
)

__version__ = "0.1.0"

if TYPE_CHECKING:
    from .listener import ALERT_CHANNEL, AlertEvent, listen_alerts
    from .run import apply_prerequisites, baseline, run_migrations
    from .source import Migration, MigrationFile, MigrationSource, load_source

# The engine (asyncpg, tenacity, ...) loads on first use, so that importing the
# package for its types or its crypto stays cheap.
_LAZY = {
    "ALERT_CHANNEL": ".listener",
    "AlertEvent": ".listener",
    "listen_alerts": ".listener",
    "apply_prerequisites": ".run",
    "baseline": ".run",
    "run_migrations": ".run",
    "Migration": ".source",
    "MigrationFile": ".source",
    "MigrationSource": ".source",
    "load_source": ".source",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'silentpulse_db' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "ALERT_CHANNEL",
    "AlertEvent",
    "AppliedMigration",
    "BaselineError",
    "ChecksumMismatchError",
    "ConfigurationError",
    "CredentialMigrationError",
    "CryptoError",
    "DatabaseAheadError",
    "DatabaseConnectionError",
    "DirtyDatabaseError",
    "KeyConfigError",
    "LockHolder",
    "LockTimeoutError",
    "MalformedEnvelopeError",
    "Migration",
    "MigrationFailedError",
    "MigrationFile",
    "MigrationInterruptedError",
    "MigrationResult",
    "MigrationSource",
    "MigrationSourceError",
    "PrerequisitesResult",
    "ReversibilityError",
    "SilentPulseDBError",
    "StatusRow",
    "TamperedValueError",
    "UnknownKeyError",
    "VersionNotFoundError",
    "__version__",
    "apply_prerequisites",
    "baseline",
    "listen_alerts",
    "load_source",
    "run_migrations",
]
