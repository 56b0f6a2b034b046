"""The migration engine, golang-migrate compatible.

Data flows one way: :mod:`.source` (the files) -> :mod:`.plan` (pure policy:
what to run, or why not) -> :mod:`.apply` (runs a plan on a locked
connection) -> :mod:`silentpulse_db.results`. :mod:`.commands` holds the public
verbs; :mod:`.cli` is a thin shell over them. Beside them: :mod:`.sql`
(statements, via pglast), :mod:`.version_table` and :mod:`.lock`
(golang-migrate's table and lock), :mod:`.session` (connection + lock),
:mod:`.catalog` and :mod:`.check` (schema snapshots and the proofs),
:mod:`.scaffold` (new migration pairs).
"""
