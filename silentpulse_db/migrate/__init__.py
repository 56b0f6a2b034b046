"""The migration engine, golang-migrate compatible.

Data flows one way: ``files/`` (the migrations, read and validated) ->
``plan.py`` (pure policy: what to run, or why not) -> ``run/`` (runs a plan on a
locked connection) -> :mod:`silentpulse_db.results`. ``commands.py`` holds the
public verbs, each reading as the runbook does, with the shared steps one call
down in ``runbook.py``; ``cli.py`` is a thin shell over them. Beside them:
``session.py`` (one connection: probe, state, lock), ``version_table.py``
(golang-migrate's table and our history), ``migration_lock/`` (golang-migrate's
advisory lock), ``dryrun/`` (the dry run and each statement's lock level) and
``proofs/`` (``check``'s and ``baseline``'s proofs on a scratch database).
"""
