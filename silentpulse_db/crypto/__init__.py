"""Credential encryption: AES-256-GCM envelopes with per-tenant keys (docs/encryption.md)."""

from .envelope import V1_MASTER, V2_PER_TENANT, Envelope, parse, peek
from .keyring import Keyring, MasterKey, parse_key

__all__ = [
    "V1_MASTER",
    "V2_PER_TENANT",
    "Envelope",
    "Keyring",
    "MasterKey",
    "parse",
    "parse_key",
    "peek",
]
