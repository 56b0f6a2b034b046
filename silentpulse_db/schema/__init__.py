"""Maintenance of the SilentPulse schema itself, beyond migrations.

- :mod:`.partitions`: monthly partitions ahead, stray rows out of default
  partitions, what `status` shows about them.
- :mod:`.retention`: dropping whole expired partitions by SilentPulse's rules.
- :mod:`.tenancy`: every relation holding tenant rows is guarded by row-level security.
"""
