"""migrate-credentials: moving credential envelopes to v2 and rotating the master key."""

from .rotation import COLUMNS, CredentialColumn, Problem, RotationReport, migrate_credentials

__all__ = ["COLUMNS", "CredentialColumn", "Problem", "RotationReport", "migrate_credentials"]
