"""migrate-credentials: moving credential envelopes to v2, rotating the master key,
and verifying that the old key can be retired."""

from .columns import COLUMNS, CredentialColumn, Problem
from .rotation import RotationReport, migrate_credentials
from .sealing import TableReport
from .verify import VerifiedColumn, VerifyReport, verify_credentials

__all__ = [
    "COLUMNS",
    "CredentialColumn",
    "Problem",
    "RotationReport",
    "TableReport",
    "VerifiedColumn",
    "VerifyReport",
    "migrate_credentials",
    "verify_credentials",
]
