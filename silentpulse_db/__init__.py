"""silentpulse-db: the SilentPulse PostgreSQL schema, its migrations and credential encryption.

Services call :func:`run_migrations` from their start-up hook; operators use the
``silentpulse-db`` command. See README.md and docs/.
"""

__version__ = "0.1.0"

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
from .run import apply_prerequisites, baseline, run_migrations
from .source import Migration, MigrationFile, MigrationSource, load_source

__all__ = [
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
    "load_source",
    "run_migrations",
]
