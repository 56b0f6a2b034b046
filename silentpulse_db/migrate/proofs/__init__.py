"""Proofs on a scratch database: ``snapshot.py`` snapshots a schema (read by ``migrate/catalog/``)
and compares two; ``check.py`` proves every down undoes its up, and that a database
matches what the first migration creates (``baseline``)."""
