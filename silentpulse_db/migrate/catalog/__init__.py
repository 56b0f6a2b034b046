"""The one reader of a database's schema from pg_catalog, kind by kind, for `check` (its
before/after snapshots: proofs/snapshot.py) and `drift` (schema_diff/).

queries.py: each kind of object (relation, column, index, grant, owner, ...) is one
``Query`` in ``KINDS``: the SQL of its key ("public.t.id"), of its value (everything a
migration could change about it, compared as one text), and of what drift adds: the
relation it belongs to, a partition's parent and bound, and the statements that
create and drop it as it is (the fix a drift report offers). reader.py: a caller names
the kinds it compares; ``statements=False`` reads the key, the value and a partition's
bound alone (what `check` compares, several times a migration). To compare a new kind
of object, add its query to queries.py and its name to the callers' kinds
(proofs/snapshot.py, schema_diff/expected.py).

Left out everywhere: PostgreSQL's own schemas, the migration bookkeeping (the version
table, its history, what protects them), and every extension's own objects. Every
query reads the catalog only: no lock on the application's tables. Nothing here
imports from proofs/ or schema_diff/: both read through it.
"""
