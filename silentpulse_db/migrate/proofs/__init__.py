"""Proofs on a scratch database: ``snapshot.py`` snapshots a schema from pg_catalog and
compares two; ``check.py`` proves every down undoes its up, and that a database
matches what the first migration creates (``baseline``)."""
